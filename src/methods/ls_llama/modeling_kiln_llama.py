"""LS-LLaMA / LS-unLLaMA classifiers computed as kiln computes them (src/methods/ls_llama).

kiln writes this file, unchanged, into every export of an ls_llama run that transformers' own
classes do not compute: LlamaForSequenceClassification pools the last token of a causal model, and
LlamaForTokenClassification names its head `score` where kiln says `classifier`. The settings are
config fields:

  kiln_pooling    last | mean | max    sequence classification: how a sentence's scores are made
  kiln_attention  causal | bidirectional
  kiln_pads       masked | attended    attended: no padding mask, and mean / max pool over every
                                       position, pads included (the official LS-unLLaMA code)

A merged export loads with AutoModelFor{Sequence,Token}Classification.from_pretrained(folder,
trust_remote_code=True) (config.json's auto_map names this file); for a PEFT adapter,
Kiln...Classification.from_base(base_model_folder, ...) builds the base model and
PeftModel.from_pretrained(model, adapter) applies the adapter. The export's README.md has the lines.
For inference: kiln's head dropout (task.head_dropout) is not applied. Written for transformers 5.x
(checked with 5.24 and peft 0.21).
"""
import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel, LlamaPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutputWithPast, TokenClassifierOutput


class KilnLlamaConfig(LlamaConfig):
    # Not "llama": without trust_remote_code transformers would otherwise build its own
    # Llama*Classification from this folder and pool the last token, silently.
    model_type = "kiln_llama"


def _setting(config, name, default, allowed):
    value = getattr(config, name, default)
    if value not in allowed:
        raise ValueError(f"config.{name} = {value!r}: expected one of {allowed}")
    return value


class KilnLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = KilnLlamaConfig
    # The attention mask is a 4-D additive tensor, which flash and flex attention do not take.
    _supports_flash_attn = False
    _supports_flex_attn = False

    @classmethod
    def from_base(cls, base, **fields):
        """The model from a plain Llama checkpoint folder plus kiln's fields (num_labels or
        id2label, kiln_pooling, kiln_attention, kiln_pads): the base a PEFT adapter applies to."""
        config_dict, _ = LlamaConfig.get_config_dict(base)
        config = KilnLlamaConfig.from_dict({**config_dict, "model_type": KilnLlamaConfig.model_type, **fields})
        return cls.from_pretrained(base, config=config)

    def _hidden(self, input_ids, attention_mask, inputs_embeds):
        """Final hidden states [B, T, H] and the real-token mask [B, T] (bool)."""
        attention = _setting(self.config, "kiln_attention", "causal", ("causal", "bidirectional"))
        pads = _setting(self.config, "kiln_pads", "masked", ("masked", "attended"))
        ref = input_ids if input_ids is not None else inputs_embeds
        B, T = ref.shape[0], ref.shape[1]
        device = ref.device
        real = (torch.ones(B, T, dtype=torch.bool, device=device) if attention_mask is None
                else attention_mask.to(device=device, dtype=torch.bool))
        seen = torch.ones_like(real) if pads == "attended" else real
        # kiln counts positions over the tokens a row attends to, so left padding gives the
        # unpadded positions (transformers' default is 0..T-1 whatever the padding).
        position_ids = (seen.long().cumsum(-1) - 1).clamp(min=0)
        allowed = seen[:, None, None, :].expand(B, 1, T, T)
        if attention == "causal":
            allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=device).tril()
        dtype = self.model.embed_tokens.weight.dtype if inputs_embeds is None else inputs_embeds.dtype
        # finfo.min rather than -inf: a query that sees nothing (a left pad under the causal mask)
        # gets a finite, unused output instead of NaN, which would reach real tokens through V.
        mask = torch.zeros(B, 1, T, T, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
        # A prepared 4-D mask is used as it is, by eager and sdpa attention alike; with a mask
        # present, sdpa does not apply its own causal mask either.
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         inputs_embeds=inputs_embeds, use_cache=False)
        return out.last_hidden_state, real


class KilnLlamaForSequenceClassification(KilnLlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = LlamaModel(config)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        pooling = _setting(self.config, "kiln_pooling", "last", ("last", "mean", "max"))
        pads_pooled = _setting(self.config, "kiln_pads", "masked", ("masked", "attended")) == "attended"
        hidden, real = self._hidden(input_ids, attention_mask, inputs_embeds)
        # The head computes in its own dtype (kiln's in float32 whatever the model's).
        hidden = hidden.to(self.score.weight.dtype)
        if pooling == "last":
            pos = torch.arange(real.shape[1], device=real.device)
            last = (pos * real.long()).amax(1)
            logits = self.score(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        elif pooling == "mean":
            if pads_pooled:
                pooled = hidden.mean(1)
            else:
                m = real.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1)
            logits = self.score(pooled)
        else:
            # The head at every position, then each class's largest logit (the official order: a
            # maximum does not commute with the linear map).
            per_token = self.score(hidden)
            if not pads_pooled:
                per_token = per_token.masked_fill(~real.unsqueeze(-1), float("-inf"))
            logits = per_token.amax(1)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device).view(-1))
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits)


class KilnLlamaForTokenClassification(KilnLlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = LlamaModel(config)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels, bias=True)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        hidden, _ = self._hidden(input_ids, attention_mask, inputs_embeds)
        logits = self.classifier(hidden.to(self.classifier.weight.dtype))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float().view(-1, self.num_labels),
                                               labels.to(logits.device).view(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits)
