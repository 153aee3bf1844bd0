"""Hugging Face adapter: Auto registration, save_pretrained / from_pretrained (safetensors), generate."""
import pytest
import torch

import language.hf as hf
from language.model import LanguageModel, ModelConfig
from transformers import AutoConfig, AutoModelForCausalLM

NAMES = ["<overflow>", "<end>", "u0d1", "u1d0"]


def small(pos, structure="none", **kw):
    torch.manual_seed(0)
    return hf.TemtLMForCausalLM(hf.TemtLMConfig(pos=pos, structure=structure, vocab_size=20, n_actions=4,
                                                action_names=NAMES, d_model=32, n_layer=2, n_head=4, d_ff=48,
                                                pos_dim=8, max_len=16, **kw)).eval()


@pytest.mark.parametrize("pos, structure", [("sinusoidal", "none"), ("learned", "none"), ("rope", "none"),
                                            ("alibi", "none"), ("none", "none"), ("grammar", "joint"),
                                            ("shiv_quirk", "joint"), ("sinusoidal", "tokens")])
def test_save_and_load_pretrained_round_trip(tmp_path, pos, structure):
    model = small(pos, structure)
    x = torch.tensor([[2, 5, 6, 7, 8]])
    a = torch.tensor([[2, 3, 2, 1, 0]]) if structure != "none" else None
    before = model(x, actions=a).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "temt-lm"
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(again, hf.TemtLMForCausalLM) and again.config.action_names == NAMES
    assert torch.equal(again(x, actions=a).logits, before)
    assert again.lm.head.weight.data_ptr() == again.lm.tok.weight.data_ptr()          # still tied


def test_labels_loss_matches_the_native_model():
    model = small("rope")
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    out = model(ids, labels=ids)
    native = model.lm(ids)
    assert out.loss.item() == pytest.approx((native.word_nll / native.n_tokens).item(), rel=1e-5)


def test_generate_for_baselines_and_refusal_for_structure_models():
    model = small("alibi")
    out = model.generate(torch.tensor([[2]]), max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 7) and out[0, 0] == 2
    with pytest.raises(ValueError, match="generate_joint"):
        small("grammar", "joint").generate(torch.tensor([[2]]), max_new_tokens=3)


def test_generate_joint_samples_words_with_their_own_structure():
    torch.manual_seed(0)
    lm = LanguageModel(ModelConfig(pos="grammar", structure="joint", vocab_size=20, n_actions=4, d_model=32,
                                   n_layer=2, n_head=4, d_ff=48, pos_dim=8)).eval()
    samples = lm.generate_joint(4, max_words=6, generator=torch.Generator().manual_seed(0))
    assert len(samples) == 4
    for words, acts in samples:
        assert words[0] == 2 and len(acts) == len(words) - 1 and all(0 <= a < 4 for a in acts)
        assert words[-1] == 3 or len(words) == 8


def test_unknown_encoding_is_rejected_by_the_hf_config():
    with pytest.raises(ValueError, match="unknown positional encoding"):
        hf.TemtLMConfig(pos="absolute", vocab_size=20)
