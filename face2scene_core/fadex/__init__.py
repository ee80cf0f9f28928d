"""FaDeX, the facial degradation encoder of Face2Scene (Stage II), its contrastive trainer and evaluation.

    from face2scene_core.fadex import FaDeX
    fadex = FaDeX.from_pretrained("runs/fadex/final").eval()
    out = fadex.encode_pair(lq_crop, hq_crop)      # uint8 (H, W, 3) pair at native scale
    out.features  # (1, C, H/4, W/4) -> MapNet;  out.embedding  # (1, 256), unit norm

Modules: ``model`` (FaDeX), ``moco`` (query/key encoders, labelled queue, multi-positive InfoNCE),
``data`` (on-the-fly degraded face pairs), ``train`` (resumable training, CLI). Its evaluation (paper Fig. 3
analysis and operator retrieval) is :mod:`face2scene_core.evaluation.fadex`.
"""

from .data import FacePairSampler, PairBatch, load_face_images
from .model import MIN_INPUT_SIZE, FaDeX, FaDeXOutput
from .moco import MoCoFaDeX, MoCoOutput, multi_positive_info_nce
from .train import FaDeXTrainConfig, train_fadex

__all__ = [
    "FaDeX",
    "FaDeXOutput",
    "MIN_INPUT_SIZE",
    "MoCoFaDeX",
    "MoCoOutput",
    "multi_positive_info_nce",
    "FacePairSampler",
    "PairBatch",
    "load_face_images",
    "FaDeXTrainConfig",
    "train_fadex",
]
