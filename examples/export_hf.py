"""Export a language model to Hugging Face `transformers` and load it back with the Auto classes.

    python examples/export_hf.py OUT_DIR

`import language.hf` registers TemtLMConfig / TemtLMForCausalLM with AutoConfig and AutoModelForCausalLM.
A trained run exports the same way from the command line: `temt-language export RUN_DIR OUT_DIR` (which also
copies its vocabularies). Here an untrained RoPE model stands in for a run.
"""
import sys

import torch
from transformers import AutoModelForCausalLM

import language.hf
from language.model import LanguageModel, ModelConfig

torch.manual_seed(0)
torch.set_num_threads(1)
lm = LanguageModel(ModelConfig(pos="rope", vocab_size=50, d_model=32, n_layer=2, n_head=4, d_ff=64))
hf = language.hf.from_language_model(lm)                  # a transformers PreTrainedModel around the same weights
hf.save_pretrained(sys.argv[1])                           # config.json + model.safetensors

again = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor([[2, 7, 9, 11]])                       # BOS and three word ids
with torch.no_grad():
    same = torch.allclose(again(input_ids=ids).logits, lm.eval().logits(ids)[0], atol=1e-5)
    text = again.generate(ids, max_new_tokens=5, do_sample=False)
print(f"reloaded as {type(again).__name__}; same logits: {same}; greedy continuation {text[0].tolist()}")
