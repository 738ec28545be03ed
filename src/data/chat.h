// Conversation formats: how a list of messages becomes a model's token ids, for inference (a
// prompt that ends where the assistant's answer starts: kiln lep bench) and for training (every
// message, with the assistant's turns as targets: method lm's `task.chat`). Templates hold
// {content}; {bos} and {eos} stand for the tokenizer's BOS and EOS strings. Any special token's
// string in the rendered text (the tokenizer's special pieces and added tokens, and
// tokenizer_config.json's added_tokens_decoder) becomes its id, as Hugging Face tokenizers treat a
// rendered chat template; the text between is encoded without BOS. The presets follow the models'
// own Jinja chat templates, which kiln does not execute.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/recipe.h"

namespace kiln::data {

class Tokenizer;

struct ChatFormat {
  std::string name;
  std::string prefix;         // once, first (e.g. "{bos}")
  std::string system;         // a system message
  std::string user;           // a user message
  std::string assistant;      // a complete assistant message; a last, open one ends at its content
  std::string generation;     // after a last user message: where the assistant's answer starts
  std::string system_prompt;  // a system message added when the conversation has none ("": none)
  bool trim = false;          // strip each message's surrounding whitespace (LLaMA-3's template does)
  bool answer_alone = false;  // in prompts too, an assistant message's content is encoded on its own
};
// fastchat (kiln lm's default conversation template, UniversalNER's), llama3, openchat, chatml,
// plain, llama2c (fastchat's layout with each answer ended by BOS: llama2.c's TinyStories models,
// the bundled stories260K, separate documents with BOS alone and never learned an EOS).
ChatFormat chat_preset(const std::string& name);
const std::vector<std::string>& chat_preset_names();
// The preset a model folder's own chat template (tokenizer_config.json `chat_template`) follows,
// recognised by its markers (ChatML's <|im_start|>, LLaMA-3's <|start_header_id|>, openchat's
// "GPT4 Correct"), with the default system prompt a ChatML template inserts when a conversation
// has none (SmolLM2's). InputError naming the file when there is no template or kiln does not
// recognise it.
ChatFormat chat_format_of_model(const std::string& model_dir);
// The format as a Jinja chat template (tokenizer_config.json `chat_template`, GGUF
// tokenizer.chat_template), so that transformers' apply_chat_template and llama.cpp render the text
// kiln renders; {bos}/{eos} become the tokenizer's strings. The template renders text only: where
// kiln encodes an answer on its own (answer_alone), token boundaries at the answer can differ.
std::string chat_template_jinja(const ChatFormat& chat, const Tokenizer& tok);
// `key` of a recipe section: a preset's name, or a map of the ChatFormat fields over `base` (a
// preset, default plain). InputError naming file:line and key.
ChatFormat read_chat_format(recipe::Section& s, const std::string& key);

struct Message {
  std::string role;  // system | user | assistant
  std::string content;
};

// The id of the special token that ends an assistant turn (the first thing after {content} in the
// assistant template, e.g. <|eot_id|>, <|end_of_turn|>, {eos}), -1 when the turn ends in text:
// generation stops there, as at EOS.
int32_t turn_end_id(const ChatFormat& chat, const Tokenizer& tok, const std::map<std::string, int32_t>& specials);

// The special strings of a model folder's tokenizer (see above).
std::map<std::string, int32_t> special_strings(const Tokenizer& tok, const std::string& model_dir);

// A prompt: the prefix, the messages (a last assistant message left open: the answer continues
// it) and, after a last user message, the generation text.
std::vector<int32_t> render(const ChatFormat& chat, const std::vector<Message>& messages, const Tokenizer& tok,
                            const std::map<std::string, int32_t>& specials);
// A training example: every message; mask is 1 on each assistant message's content (encoded on its
// own, the spaces before it with it) and on its template's text after the content (the end of the
// turn, e.g. <|eot_id|>), 0 elsewhere. Appends to ids and mask.
void render_training(const ChatFormat& chat, const std::vector<Message>& messages, const Tokenizer& tok,
                     const std::map<std::string, int32_t>& specials, std::vector<int32_t>& ids, std::vector<uint8_t>& mask);

}  // namespace kiln::data
