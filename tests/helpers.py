"""Tiny offline models shared by the test modules."""

WORDS = ("the a cat dog sat on mat is eating food bread man piece of sky blue library for python "
         "development files tool command line manage packages shared documentation").split()


def build_tiny_bert(path, max_len: int = 128, layers: int = 2):
    """A random 2-layer BERT (hidden 32) with a WordPiece vocabulary of WORDS + letters, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), *letters, *("##" + c for c in letters)]
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    tok.model_max_length = max_len
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=max_len)
    BertModel(cfg).save_pretrained(path)
    return path


def chromium_or_skip_reason():
    """``(path, None)`` when headless Chromium is found, else ``(None, reason)``.

    On CI (``CI=true``) a missing browser is a failure, not a skip: ``.ci/run`` installs Debian's chromium,
    so the browser checks of the book must run there.
    """
    import os

    import pytest

    from tpo_core.commands import browser_check

    try:
        return browser_check.find_chromium(), None
    except browser_check.ChromiumNotFound as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but Chromium is missing ({err}); .ci/run installs it with apt-get", pytrace=False)
        return None, f"Chromium is not installed (apt-get install chromium, or set $CHROMIUM): {err}"
