"""Hugging Face adapter: the language models as `transformers` classes (temt_core stays free of Hugging Face).

    import language.hf                                     # registers the classes with the Auto factories
    from transformers import AutoConfig, AutoModelForCausalLM
    model = language.hf.TemtLMForCausalLM(language.hf.TemtLMConfig(pos="rope", vocab_size=1000))
    model.save_pretrained("out")                           # config.json + model.safetensors
    again = AutoModelForCausalLM.from_pretrained("out")    # the same logits
    again.generate(torch.tensor([[2]]), max_new_tokens=20, do_sample=True)  # baselines (no structure)

    python -m language export runs/language-quick/sinusoidal/seed0 hf_out   # a trained run, vocabularies too

Every ModelConfig field is a TemtLMConfig attribute, so the action vocabulary travels with the model
(`action_names`). Structure-using models accept `actions` in forward (row i's prediction knows a_i); for them,
`generate` is refused (it cannot choose actions): use `LanguageModel.generate_joint`, which samples the model's
own structure word by word.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .model import LanguageModel, ModelConfig

MODEL_TYPE = "temt-lm"
_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]


class TemtLMConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, bos_token_id: int = 2, eos_token_id: int = 3, pad_token_id: int = 0, **kwargs):
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

    def forward(self, input_ids=None, attention_mask=None, labels=None, actions=None, **kwargs) -> CausalLMOutput:
        """input_ids (B, T) -> logits (B, T, V); row i predicts token i+1. labels as in any causal LM (shifted
        inside; -100 ignored). Right padding only: rows never attend forward, so padding never changes them."""
        logits, _ = self.lm.logits(input_ids, actions)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids}                  # no cache: every step re-reads the whole prefix

    def generate(self, *args, **kwargs):
        if self.lm.cfg.structure != "none":
            raise ValueError(f"generate() cannot choose actions for structure={self.lm.cfg.structure!r}; use "
                             "model.lm.generate_joint (samples the model's own structure)")
        kwargs.setdefault("use_cache", False)
        return super().generate(*args, **kwargs)


AutoConfig.register(MODEL_TYPE, TemtLMConfig, exist_ok=True)
AutoModelForCausalLM.register(TemtLMConfig, TemtLMForCausalLM, exist_ok=True)


def from_language_model(lm: LanguageModel) -> TemtLMForCausalLM:
    model = TemtLMForCausalLM(TemtLMConfig.from_model_config(lm.cfg))
    model.lm.load_state_dict(lm.state_dict())
    return model


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """save_pretrained of a trained run's best weights, with its vocabularies (words.json, actions.json)."""
    from .train import load_trained
    run_dir, out = Path(run_dir), Path(out)
    model = from_language_model(load_trained(run_dir))
    model.save_pretrained(str(out))
    for name in ("words.json", "actions.json", "tree_labels.json"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, out / name)
    return out
