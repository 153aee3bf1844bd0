"""Hugging Face adapter: the language models as `transformers` classes (temt_core stays free of Hugging Face).

    import language.hf                                     # registers the classes with the Auto factories
    from transformers import AutoConfig, AutoModelForCausalLM
    model = language.hf.TemtLMForCausalLM(language.hf.TemtLMConfig(pos="rope", vocab_size=1000))
    model.save_pretrained("out")                           # config.json + model.safetensors
    again = AutoModelForCausalLM.from_pretrained("out")    # the same logits
    again.generate(torch.tensor([[2]]), max_new_tokens=20, do_sample=True)  # baselines (no structure)

    python -m language export runs/language-quick/sinusoidal/seed0 hf_out   # a trained run, vocabularies too

Every ModelConfig field is a TemtLMConfig attribute, so the action vocabulary travels with the model
(`action_names`); unknown keyword arguments are errors that name the key, and the usual names work through
`attribute_map` (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings).
Structure-using models accept `actions` in forward (row i's prediction knows a_i); for them, `generate` is refused
(it cannot choose actions): use `LanguageModel.generate_joint`, which samples the model's own structure word by
word.

The loss of `model(ids, actions=gold, labels=ids)` is what a language model pays: for a model that predicts its
structure, the joint -log p(words, gold actions) per word (an upper bound on its word perplexity); the number with
the gold actions given for free, -log p(words | gold actions), leaks the tree of the words being predicted and
comes only when asked for by name (`loss_kind="conditional"`). An exported run carries its word vocabulary as a
`transformers` tokenizer (`AutoTokenizer.from_pretrained(out)`): word level, or for a subword run (data.vocab=bpe |
unigram) its byte-level pieces. Give it words, as the model was trained: `tok(words, is_split_into_words=True)`
(one id per word, or a word's pieces; a raw string is one word, spaces included).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from temt_core.config import suggest

from .model import LanguageModel, ModelConfig

MODEL_TYPE = "temt-lm"
_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]
# what PretrainedConfig itself takes (its attributes, and what save_pretrained writes into config.json)
_HF_KEYS = set(vars(PretrainedConfig())) | {"model_type", "transformers_version", "architectures", "dtype",
                                             "torch_dtype", "name_or_path", "_name_or_path", "auto_map",
                                             "tie_word_embeddings", "output_attentions", "use_cache", "num_labels"}


class TemtLMConfig(PretrainedConfig):
    model_type = MODEL_TYPE
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                     "intermediate_size": "d_ff", "max_position_embeddings": "max_len"}

    def __init__(self, bos_token_id: int = 2, eos_token_id: int = 3, pad_token_id: int = 0, **kwargs):
        for alias, name in self.attribute_map.items():
            if alias in kwargs:
                kwargs[name] = kwargs.pop(alias)
        unknown = [k for k in kwargs if k not in _FIELDS and k not in _HF_KEYS]
        if unknown:
            raise ValueError(f"TemtLMConfig: unknown key {unknown[0]!r}{suggest(unknown[0], _FIELDS)}; the keys are "
                             f"ModelConfig's fields ({', '.join(_FIELDS[:6])}, ...) and PretrainedConfig's")
        defaults = dataclasses.asdict(ModelConfig())
        own = {k: kwargs.pop(k, defaults[k]) for k in _FIELDS}
        for k, v in own.items():
            setattr(self, k, v)
        kwargs["tie_word_embeddings"] = own["tie_embeddings"]    # one source of truth: ModelConfig's field
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        self.model_config()                      # validate now (unknown encodings, bad combinations)

    def model_config(self) -> ModelConfig:
        return ModelConfig(**{k: getattr(self, k) for k in _FIELDS})

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, **kwargs) -> "TemtLMConfig":
        return cls(**dataclasses.asdict(cfg), **kwargs)


class TemtLMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = TemtLMConfig
    base_model_prefix = "lm"
    main_input_name = "input_ids"
    _supports_cache_class = False
    _tied_weights_keys = {"lm.head.weight": "lm.tok.weight"}

    def __init__(self, config: TemtLMConfig):
        super().__init__(config)
        self.lm = LanguageModel(config.model_config())
        if not config.tie_embeddings:
            self._tied_weights_keys = {}
        self.post_init()

    def _init_weights(self, module):
        """LanguageModel initialises itself; here only the derived buffers that are not saved are rebuilt (they
        can be left empty when from_pretrained builds the model on the meta device)."""
        from temt_core.positions import RecurrentPositions
        if isinstance(module, RecurrentPositions):
            module.rebuild_buffers(module.e_init.device if module.e_init.device.type != "meta" else None)

    def get_input_embeddings(self):
        return self.lm.tok

    def set_input_embeddings(self, value):
        self.lm.tok = value

    def get_output_embeddings(self):
        return self.lm.head

    def forward(self, input_ids=None, attention_mask=None, labels=None, actions=None, loss_kind: str | None = None,
                **kwargs) -> CausalLMOutput:
        """input_ids (B, T) -> logits (B, T, V); row i predicts token i+1. labels as in any causal LM (shifted
        inside; -100 ignored; so are positions where attention_mask is 0). Right padding only: rows never attend
        forward, so padding after a row never changes it; a mask with a 0 before a 1 is refused.

        loss_kind: None picks the honest loss (words for models that read no actions, joint for models that
        predict their structure); 'joint' or 'conditional' (-log p(words | gold actions): not a language-model
        loss) by name. A model that reads gold actions it does not predict has only the conditional loss, so it
        must be asked for by name."""
        if attention_mask is not None:
            _check_right_padding(attention_mask)
        logits, hb = self.lm.logits(input_ids, actions)
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, -100)
            loss = self._loss(logits, hb, labels, actions, loss_kind)
        return CausalLMOutput(loss=loss, logits=logits)

    def _loss(self, logits, hb, labels, actions, loss_kind):
        cfg = self.lm.cfg
        kinds = ("joint", "conditional")
        if loss_kind is not None and loss_kind not in kinds:
            raise ValueError(f"loss_kind must be one of {kinds} (or None), got {loss_kind!r}")
        if actions is None or (loss_kind is None and not cfg.predicts_structure):
            if actions is not None:
                raise ValueError(f"structure={cfg.structure!r} with pos={cfg.pos!r} reads gold actions it does not "
                                 "predict: its loss is -log p(words | gold actions), which leaks the tree of the words "
                                 "being predicted; pass loss_kind='conditional' to get that number by name")
            loss_kind = "words"
        loss_kind = loss_kind or "joint"
        if loss_kind == "joint" and not cfg.has_action_head:
            raise ValueError(f"loss_kind='joint' needs a model with an action head (structure={cfg.structure!r})")
        y = labels[:, 1:]                                                             # (B, T-1)
        keep = y != -100
        word = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                 y.reshape(-1), ignore_index=-100, reduction="sum")
        total = word
        if loss_kind == "joint":                   # row i also pays for a_i, as LanguageModel.forward does
            a_logits = self.lm.act_head(self.lm.ln_a(hb))[:, :-1]                     # (B, T-1, A)
            a = actions[:, : a_logits.shape[1]].masked_fill(~keep, -100)
            total = total + torch.nn.functional.cross_entropy(a_logits.reshape(-1, a_logits.shape[-1]).float(),
                                                              a.reshape(-1), ignore_index=-100, reduction="sum")
        return total / keep.sum().clamp(min=1)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids}                  # no cache: every step re-reads the whole prefix

    def generate(self, *args, **kwargs):
        if self.lm.cfg.structure != "none":
            raise ValueError(f"generate() cannot choose actions for structure={self.lm.cfg.structure!r}; use "
                             "model.lm.generate_joint (samples the model's own structure)")
        kwargs.setdefault("use_cache", False)
        return super().generate(*args, **kwargs)


def _check_right_padding(attention_mask: torch.Tensor) -> None:
    m = attention_mask.to(torch.bool)
    holes = (~m[:, :-1] & m[:, 1:]).any(1)             # a 0 followed by a 1: left padding or a gap
    if bool(holes.any()):
        row = int(holes.nonzero()[0])
        raise ValueError(f"attention_mask row {row} has padding before real tokens: temt-lm takes right padding "
                         "only (pad at the end; rows never attend forward, so it never changes them)")


AutoConfig.register(MODEL_TYPE, TemtLMConfig, exist_ok=True)
AutoModelForCausalLM.register(TemtLMConfig, TemtLMForCausalLM, exist_ok=True)


def from_language_model(lm: LanguageModel) -> TemtLMForCausalLM:
    model = TemtLMForCausalLM(TemtLMConfig.from_model_config(lm.cfg))
    model.lm.load_state_dict(lm.state_dict())
    return model


def word_tokenizer(words_json: str | Path):
    """A run's word vocabulary (a `tokenizers` file: word level, BPE or unigram) as a transformers tokenizer with
    the model's special words."""
    from transformers import PreTrainedTokenizerFast

    from .data import BOS, EOS, PAD, UNK
    return PreTrainedTokenizerFast(tokenizer_file=str(words_json), bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, padding_side="right")


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """save_pretrained of a trained run's best weights, with its tokenizer (AutoTokenizer reads it) and its
    vocabularies (words.json, actions.json, tree_labels.json)."""
    from .train import load_trained
    run_dir, out = Path(run_dir), Path(out)
    model = from_language_model(load_trained(run_dir))
    model.save_pretrained(str(out))
    word_tokenizer(run_dir / "words.json").save_pretrained(str(out))
    for name in ("words.json", "actions.json", "tree_labels.json"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, out / name)
    return out
