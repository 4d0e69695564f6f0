"""Text tokenizer and processor: SentencePiece trained on the corpus captions, saved as HF `SiglipTokenizer`.

SigLIP's text tower pools the *last* position, so training pads to `max_length` exactly as the Quick Start's
``padding="max_length"`` does at inference.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable

from transformers import SiglipImageProcessorPil, SiglipProcessor, SiglipTokenizer

from mtv.errors import MTVError

# Words a user's zero-shot prompts need even if the captions never say them.
_PROMPT_WORDS = "a an the photo picture rendering image of this is there with and on in at 0 1 2 3 4 5 6 7 8 9"


def train_tokenizer(captions: Iterable[str], out_dir: str, vocab_size: int = 1000, text_length: int = 64) -> SiglipTokenizer:
    """Trains a BPE SentencePiece model on ``captions`` and returns it as a `SiglipTokenizer`."""
    import sentencepiece as spm

    os.makedirs(out_dir, exist_ok=True)
    corpus = [c.lower() for c in captions] + [_PROMPT_WORDS]
    if len(corpus) < 2:
        raise MTVError("tokenizer: no captions to train on; check the training shards have .txt members")
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "spiece")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus), model_prefix=prefix, vocab_size=vocab_size, model_type="bpe",
            character_coverage=1.0, byte_fallback=False, hard_vocab_limit=False,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
            minloglevel=2, num_threads=1,
        )
        # No attention mask, as in SigLIP: the text tower is trained on padded sequences and pools the last one.
        tok = SiglipTokenizer(vocab_file=prefix + ".model", pad_token="<pad>", model_max_length=text_length,
                              model_input_names=["input_ids"])
        tok.save_pretrained(out_dir)
    return SiglipTokenizer.from_pretrained(out_dir)


def build_processor(tokenizer, image_size: int) -> SiglipProcessor:
    """The processor users load with `SiglipProcessor.from_pretrained`: resize to the tower's size, [-1, 1]."""
    images = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    return SiglipProcessor(image_processor=images, tokenizer=tokenizer)


def load_processor(path: str | os.PathLike) -> SiglipProcessor:
    path = str(path)
    try:
        return SiglipProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError) as e:
        raise MTVError(f"{path}: no SigLIP processor here ({str(e).splitlines()[0]}); "
                       "give a directory with a tokenizer and preprocessor config") from None
