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


def build_tiny_llama(path=None):
    """A random 2-layer Llama (hidden 32) and a byte-level BPE tokenizer (vocab 300); saved if ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS[i:i + 6]) for i in range(0, len(WORDS), 3)] * 3
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>", "<s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                  bos_token="<s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    if path is not None:
        tok.save_pretrained(path)
        model.save_pretrained(path)
    return model, tok
