"""Text conditioning: an offline sentence encoder (a BERT forward in torch) and the encoded-prompt batch.

    from ddpmlab.text import load_default_encoder, drop_context
    enc = load_default_encoder()              # all-MiniLM-L6-v2, 384-dim, from the installed package
    ctx = enc.encode(["a red apple", ""])     # TextContext; "" is the null prompt
"""

from .context import NULL_PROMPT, TextContext, as_context, drop_context
from .encoder import SentenceEncoder, default_encoder_dir, load_default_encoder, load_encoder

__all__ = ["NULL_PROMPT", "SentenceEncoder", "TextContext", "as_context", "default_encoder_dir", "drop_context",
           "load_default_encoder", "load_encoder"]
