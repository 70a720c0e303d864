"""Documents: the page tokenizer (a VQ-VAE whose codes are DiT's BEiT targets), its training, and the cached codes of
every page. The pages themselves (rendered PDFs, generated genres, page folders) are data: selfsup.data.documents."""

from .codes import page_codes
from .train import load_tokenizer, open_pages, train_tokenizer
from .vqvae import VQVAE, TokenizerConfig, code_statistics, nearest_codes, vq_losses

__all__ = ["VQVAE", "TokenizerConfig", "code_statistics", "load_tokenizer", "nearest_codes", "open_pages",
           "page_codes", "train_tokenizer", "vq_losses"]
