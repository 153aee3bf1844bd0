"""temt_core: the TEM-transformer's mechanisms in pure PyTorch. It knows nothing of grids or sentences.

    RecurrentPositions   e_t = sigma(e_{t-1} W_{a_t}): time mode (loop | fused | scan) and tree mode
    TEMtAttention        q = k = LN(e) W_e, v = x W_x, softmax over strictly earlier memories, log(n) scaling
    MemoryStore          (position, stimulus) memories carried across truncated-backprop chunks, de-duplicated
    LandmarkCorrection   the stimulus retrieves a stored position; a learned gate pulls the position towards it
    HebbianMemory        TEM's memory; one-step retrieval == attention without the softmax (claim C4)
    TEMt                 the assembled model with TEM's losses
"""
from .attention import Keys, TEMtAttention, zscore
from .hebbian import HebbianMemory, outer_product_memory, unnormalised_attention
from .landmark import LandmarkCorrection
from .memory import MemoryStore
from .model import TEMt, TEMtConfig, TEMtOutput, TEMtState
from .positions import RESET, RecurrentPositions
from .validation import NonFiniteError

__all__ = ["RESET", "RecurrentPositions", "TEMtAttention", "Keys", "zscore", "MemoryStore", "LandmarkCorrection",
           "HebbianMemory", "outer_product_memory", "unnormalised_attention", "TEMt", "TEMtConfig", "TEMtOutput",
           "TEMtState", "NonFiniteError"]
