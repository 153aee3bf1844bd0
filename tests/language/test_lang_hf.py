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


def test_config_is_strict_and_answers_to_the_usual_names():
    with pytest.raises(ValueError, match=r"unknown key 'd_modl' \(did you mean 'd_model'\?\)"):
        hf.TemtLMConfig(pos="rope", vocab_size=20, d_modl=64)
    cfg = hf.TemtLMConfig(pos="rope", vocab_size=20, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                          intermediate_size=96, max_position_embeddings=40)
    assert (cfg.d_model, cfg.n_layer, cfg.n_head, cfg.d_ff, cfg.max_len) == (64, 3, 4, 96, 40)
    assert cfg.hidden_size == 64 and cfg.model_config().d_model == 64


def test_attention_mask_right_padding_only_and_ignored_in_the_loss():
    model = small("rope")
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    padded = torch.tensor([[2, 5, 6, 7, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    plain = model(ids, labels=ids).loss
    assert model(padded, attention_mask=mask, labels=padded).loss.item() == pytest.approx(plain.item(), rel=1e-6)
    with pytest.raises(ValueError, match="row 0 has padding before real tokens"):
        model(padded.flip(1), attention_mask=mask.flip(1))


def test_structure_models_pay_for_their_actions_unless_the_conditional_is_asked_for_by_name():
    model = small("grammar", "joint")
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    acts = torch.tensor([[2, 3, 2, 1, 0]])                     # one per input row (the last predicts nothing)
    native = model.lm(ids, acts[:, :-1])
    joint = model(ids, actions=acts, labels=ids).loss
    assert joint.item() == pytest.approx(((native.word_nll + native.action_nll) / native.n_tokens).item(), rel=1e-5)
    conditional = model(ids, actions=acts, labels=ids, loss_kind="conditional").loss
    assert conditional.item() == pytest.approx((native.word_nll / native.n_tokens).item(), rel=1e-5)
    assert conditional < joint                                 # the free gold tree looks better: the leak
    reads_only = small("grammar", "given")                     # reads actions, never predicts them
    with pytest.raises(ValueError, match="loss_kind='conditional'"):
        reads_only(ids, actions=acts, labels=ids)
    assert reads_only(ids, actions=acts, labels=ids, loss_kind="conditional").loss > 0


def test_export_writes_a_tokenizer_that_auto_tokenizer_reads(toy_root, tmp_path):
    from lang_toydata import tiny_overrides
    from language.train import LanguageConfig, train
    from temt_core.config import load_config
    from transformers import AutoTokenizer
    train(load_config(LanguageConfig, None, tiny_overrides(toy_root, **{"train.steps": 4, "train.eval_every": 4})),
          tmp_path / "run")
    out = hf.export_run(tmp_path / "run", tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.bos_token, tok.eos_token, tok.pad_token_id) == ("<bos>", "<eos>", 0)
    ids = tok(["the", "dog", "sees"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and tok.unk_token_id not in ids
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size == len(tok)
