"""temt_core: the TEM-transformer's mechanisms in pure PyTorch (no grids, no sentences)."""
from .positions import RESET, RecurrentPositions
