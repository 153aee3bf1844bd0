"""language: grammar-derived positions for small causal language models, compared honestly (issue 4, claim C10).

    trees.py      CoNLL-U, PTB brackets and spaCy Docs -> Tree (one structure for dependencies and constituents)
    actions.py    tree paths between consecutive words -> actions (up/down or close/open, caps, overflow, END,
                  CONTINUE for subwords); ActionVocab built from training data, saved with the model
    data.py       DataConfig, word vocabulary (tokenizers, <unk> below frequency 2), datasets, batching
    positions.py  sinusoidal, learned, RoPE, ALiBi, none, grammar (temt_core time mode), Shiv & Quirk (fixed
                  push/pop), tree-mode variants for the conditional diagnostic: one contract per kind
    model.py      ModelConfig, LanguageModel: GPT-style decoder, TEM-t heads beside content heads, action head
    evaluate.py   exact / joint / conditional perplexity, beam marginals, enumeration, paired bootstrap
    train.py      LanguageConfig and the Accelerate trainer (resume, TensorBoard, early stopping on dev)
    study.py      the arms, parameter matching, test scored once per run
    report.py     tables, learning curves and the verdict (docs/results/language.md)
    hf.py         Hugging Face adapter: TemtLMConfig / TemtLMForCausalLM, Auto registration, generate
    cli.py        python -m language {train,evaluate,study,actions,export}

The heavy imports (datasets, tokenizers, accelerate, transformers) happen inside the functions that need them.
"""
from .actions import ActionConfig, ActionVocab, action_names, expand_for_subwords, path_moves
from .model import LanguageModel, LMOutput, ModelConfig, count_params, match_d_ff
from .trees import ReadStats, Tree, TreebankError, from_spacy, read_brackets, read_conllu, read_ptb_zip

__all__ = ["ActionConfig", "ActionVocab", "action_names", "expand_for_subwords", "path_moves", "LanguageModel",
           "LMOutput", "ModelConfig", "count_params", "match_d_ff", "ReadStats", "Tree", "TreebankError",
           "from_spacy", "read_brackets", "read_conllu", "read_ptb_zip"]
