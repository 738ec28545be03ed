#include "data/chat.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <regex>

#include "core/error.h"
#include "core/files.h"
#include "data/tokenizer.h"
#include "data/vocab_edit.h"

namespace kiln::data {

const std::vector<std::string>& chat_preset_names() {
  static const std::vector<std::string> names = {"fastchat", "llama3", "openchat", "chatml", "plain", "llama2c"};
  return names;
}

ChatFormat chat_preset(const std::string& name) {
  ChatFormat c;
  c.name = name;
  if (name == "fastchat") {  // methods/lm encode_conversation: `{system} USER: {q} ASSISTANT:` `{a}</s>`
    c.prefix = "{bos}";
    c.system = "{content} ";
    c.user = "USER: {content} ASSISTANT:";
    c.assistant = "{content}{eos}";
    c.answer_alone = true;
  } else if (name == "llama2c") {  // fastchat, the turn ended as llama2.c ends a document
    c = chat_preset("fastchat");
    c.name = name;
    c.assistant = "{content}{bos}";
  } else if (name == "llama3") {  // Meta-Llama-3-8B-Instruct's chat_template (content trimmed)
    c.prefix = "{bos}";
    c.system = "<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>";
    c.user = "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>";
    c.assistant = "<|start_header_id|>assistant<|end_header_id|>\n\n{content}<|eot_id|>";
    c.generation = "<|start_header_id|>assistant<|end_header_id|>\n\n";
    c.trim = true;
  } else if (name == "openchat") {  // openchat-3.5's chat_template
    c.prefix = "{bos}";
    c.system = "GPT4 Correct System: {content}<|end_of_turn|>";
    c.user = "GPT4 Correct User: {content}<|end_of_turn|>";
    c.assistant = "GPT4 Correct Assistant: {content}<|end_of_turn|>";
    c.generation = "GPT4 Correct Assistant:";
  } else if (name == "chatml") {
    c.system = "<|im_start|>system\n{content}<|im_end|>\n";
    c.user = "<|im_start|>user\n{content}<|im_end|>\n";
    c.assistant = "<|im_start|>assistant\n{content}<|im_end|>\n";
    c.generation = "<|im_start|>assistant\n";
  } else if (name == "plain") {
    c.prefix = "{bos}";
    c.system = "{content}\n";
    c.user = "{content}\n";
    c.assistant = "{content}\n";
  } else {
    std::string names;
    for (auto& n : chat_preset_names()) names += (names.empty() ? "" : ", ") + n;
    input_error("chat format `{}`: unknown (presets: {}; or a map of prefix/system/user/assistant/generation)", name,
                names);
  }
  return c;
}

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
  return s;
}

// {bos} and {eos} as the tokenizer's strings.
std::string expand_bos_eos(const std::string& t, const Tokenizer& tok) {
  const std::string bos = tok.bos_id() >= 0 ? tok.piece(tok.bos_id()) : "", eos = tok.eos_id() >= 0 ? tok.piece(tok.eos_id()) : "";
  return replace_all(replace_all(t, "{bos}", bos), "{eos}", eos);
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

using Specials = std::map<std::string, int32_t>;

// The longest special string that starts at text[i] (specials are few and short), or none.
Specials::const_iterator special_at(const std::string& text, size_t i, const Specials& specials) {
  auto best = specials.end();
  if (i >= text.size()) return best;
  for (auto it = specials.lower_bound(std::string(1, text[i])); it != specials.end() && it->first[0] == text[i]; ++it)
    if (text.compare(i, it->first.size(), it->first) == 0 && (best == specials.end() || it->first.size() > best->first.size()))
      best = it;
  return best;
}

// Text with special strings: their ids, the text between encoded without BOS/EOS.
void encode_with_specials(const std::string& text, const Tokenizer& tok, const Specials& specials,
                          std::vector<int32_t>& out) {
  size_t start = 0, i = 0;
  auto flush = [&](size_t end) {
    if (end > start) {
      auto ids = tok.encode(text.substr(start, end - start), false, false);
      out.insert(out.end(), ids.begin(), ids.end());
    }
  };
  while (i < text.size()) {
    const auto best = special_at(text, i, specials);
    if (best == specials.end()) {
      ++i;
      continue;
    }
    flush(i);
    out.push_back(best->second);
    i += best->first.size();
    start = i;
  }
  flush(text.size());
}


// Both renderings: with `mask`, every message is rendered and each assistant message's content
// (encoded on its own) and the template text after it are targets; without, an assistant message
// that ends the conversation stays open and the generation text follows a last user message.
void render_impl(const ChatFormat& chat, const std::vector<Message>& messages, const Tokenizer& tok,
                 const std::map<std::string, int32_t>& specials, std::vector<int32_t>& ids, std::vector<uint8_t>* mask) {
  auto expand = [&](const std::string& t) { return expand_bos_eos(t, tok); };
  std::string text = expand(chat.prefix);
  auto emit = [&](const std::string& s, bool target) {
    const size_t before = ids.size();
    encode_with_specials(s, tok, specials, ids);
    if (mask) mask->insert(mask->end(), ids.size() - before, target ? 1 : 0);
  };
  std::vector<Message> msgs = messages;
  if (!chat.system_prompt.empty() && (msgs.empty() || msgs[0].role != "system"))
    msgs.insert(msgs.begin(), {"system", chat.system_prompt});
  for (size_t i = 0; i < msgs.size(); ++i) {
    const Message& m = msgs[i];
    std::string content = chat.trim ? trim(m.content) : m.content;
    const std::string& tmpl = m.role == "system" ? chat.system : m.role == "user" ? chat.user : chat.assistant;
    const size_t at = tmpl.find("{content}");
    const bool assistant = m.role == "assistant";
    const bool open = !mask && assistant && i + 1 == msgs.size();  // the answer continues it
    text += expand(tmpl.substr(0, at));
    if (assistant && (mask || chat.answer_alone)) {
      // The content on its own: spaces before it go with it (a SentencePiece word-start mark
      // stands for one), so "Assistant: {content}" cuts as the whole text would.
      size_t k = 0;
      while (k < text.size() && text[text.size() - 1 - k] == ' ') ++k;
      text.resize(text.size() - k);
      if (tok.kind() == "sentencepiece" && k > 0) --k;
      emit(text, false);
      text.clear();
      emit(std::string(k, ' ') + content, true);
      if (mask && !open) {
        emit(expand(tmpl.substr(at + 9)), true);  // the end of the turn is learned too
        continue;
      }
    } else {
      text += content;
    }
    if (!open) text += expand(tmpl.substr(at + 9));
  }
  if (!mask && (msgs.empty() || msgs.back().role != "assistant")) text += expand(chat.generation);
  emit(text, false);
}

}  // namespace

std::string chat_template_jinja(const ChatFormat& chat, const Tokenizer& tok) {
  // Jinja string literals take JSON's escapes (\n, \", \\), so a JSON dump quotes each piece.
  auto lit = [&](const std::string& t) { return nlohmann::json(expand_bos_eos(t, tok)).dump(); };
  auto halves = [&](const std::string& t) {
    const size_t at = t.find("{content}");
    return std::make_pair(lit(t.substr(0, at)), lit(at == std::string::npos ? "" : t.substr(at + 9)));
  };
  const std::string content = chat.trim ? "(message['content'] | trim)" : "message['content']";
  const auto [sys_a, sys_b] = halves(chat.system);
  const auto [usr_a, usr_b] = halves(chat.user);
  const auto [ast_a, ast_b] = halves(chat.assistant);
  std::string j = "{{ " + lit(chat.prefix) + " }}";
  if (!chat.system_prompt.empty())
    j += "{% if messages | length == 0 or messages[0]['role'] != 'system' %}{{ " + sys_a + " + " +
         lit(chat.trim ? trim(chat.system_prompt) : chat.system_prompt) + " + " + sys_b + " }}{% endif %}";
  j += "{% for message in messages %}{% if message['role'] == 'system' %}{{ " + sys_a + " + " + content + " + " + sys_b +
       " }}{% elif message['role'] == 'user' %}{{ " + usr_a + " + " + content + " + " + usr_b + " }}{% else %}{{ " +
       ast_a + " + " + content + " + " + ast_b + " }}{% endif %}{% endfor %}";
  j += "{% if add_generation_prompt %}{{ " + lit(chat.generation) + " }}{% endif %}";
  return j;
}

ChatFormat chat_format_of_model(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "tokenizer_config.json").string();
  if (!std::filesystem::exists(path)) input_error("{}: missing, so the model's chat format is unknown (give one by name)", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    input_error("{}: not valid JSON: {}", path, e.what());
  }
  if (!j.contains("chat_template") || !j["chat_template"].is_string())
    input_error("{}: no chat_template, so the model's chat format is unknown (give one by name)", path);
  const std::string t = j["chat_template"].get<std::string>();
  if (t.find("<|im_start|>") != std::string::npos) {
    ChatFormat c = chat_preset("chatml");
    // A literal system turn in the template is what it adds to a conversation without one.
    static const std::regex sys(R"('<\|im_start\|>system\n([^'{}<]*)<\|im_end\|>)");
    std::smatch m;
    std::string lit = t;
    // Templates written by Python keep "\n" escaped inside their string literals.
    for (size_t p = 0; (p = lit.find("\\n", p)) != std::string::npos;) lit.replace(p, 2, "\n");
    if (std::regex_search(lit, m, sys)) c.system_prompt = m[1].str();
    return c;
  }
  if (t.find("<|start_header_id|>") != std::string::npos) return chat_preset("llama3");
  if (t.find("GPT4 Correct") != std::string::npos) return chat_preset("openchat");
  input_error("{}: chat_template not recognised (kiln knows ChatML, LLaMA-3 and openchat templates): give the format by "
              "name ({})",
              path, [] {
                std::string n;
                for (auto& x : chat_preset_names()) n += (n.empty() ? "" : ", ") + x;
                return n;
              }());
}

ChatFormat read_chat_format(recipe::Section& s, const std::string& key) {
  const recipe::Node* n = s.raw(key);
  if (!n || n->kind == recipe::Node::Kind::Null) return chat_preset("fastchat");
  if (n->kind == recipe::Node::Kind::Scalar) {
    try {
      return chat_preset(n->scalar);
    } catch (const InputError& e) {
      input_error("{}: key `{}`: {}", n->where(), s.key_path(key), e.what());
    }
  }
  recipe::Section c = s.sub(key);
  ChatFormat f = chat_preset(c.get_choice("base", "plain", chat_preset_names()));
  f.name = "custom";
  f.prefix = c.get_string("prefix", f.prefix);
  f.system = c.get_string("system", f.system);
  f.user = c.get_string("user", f.user);
  f.assistant = c.get_string("assistant", f.assistant);
  f.generation = c.get_string("generation", f.generation);
  f.system_prompt = c.get_string("system_prompt", f.system_prompt);
  f.trim = c.get_bool("trim", f.trim);
  f.answer_alone = c.get_bool("answer_alone", f.answer_alone);
  for (const auto* t : {&f.system, &f.user, &f.assistant})
    if (t->find("{content}") == std::string::npos)
      input_error("{}: key `{}`: every message template needs {{content}}, `{}` has none", s.where(key),
                  s.key_path(key), *t);
  c.finish();
  return f;
}

int32_t turn_end_id(const ChatFormat& chat, const Tokenizer& tok, const std::map<std::string, int32_t>& specials) {
  const size_t at = chat.assistant.find("{content}");
  if (at == std::string::npos) return -1;
  const std::string end = expand_bos_eos(chat.assistant.substr(at + 9), tok);
  const auto it = special_at(end, 0, specials);
  return it == specials.end() ? -1 : it->second;
}

std::map<std::string, int32_t> special_strings(const Tokenizer& tok, const std::string& model_dir) {
  std::map<std::string, int32_t> out;
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (tok.is_special(id)) {
      const std::string p = tok.piece(id);
      if (!p.empty()) out.emplace(p, id);
    }
  for (const auto& [id, content] : configured_added_tokens(model_dir)) out.emplace(content, id);
  return out;
}

std::vector<int32_t> render(const ChatFormat& chat, const std::vector<Message>& messages, const Tokenizer& tok,
                            const std::map<std::string, int32_t>& specials) {
  std::vector<int32_t> ids;
  render_impl(chat, messages, tok, specials, ids, nullptr);
  return ids;
}

void render_training(const ChatFormat& chat, const std::vector<Message>& messages, const Tokenizer& tok,
                     const std::map<std::string, int32_t>& specials, std::vector<int32_t>& ids, std::vector<uint8_t>& mask) {
  render_impl(chat, messages, tok, specials, ids, &mask);
}

}  // namespace kiln::data
