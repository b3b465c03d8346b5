"""Accuracy metrics: COCO detection mAP and top-k accuracy, gathered over distributed ranks.

Both follow torchmetrics' contract (``update`` / ``compute`` / ``reset``, state declared once with
its distributed reduction, a warning when ``compute`` runs before any ``update``). torch,
pycocotools and tqdm are imported on first use.
"""

from perfkit.metrics._metric import Metric
from perfkit.metrics.coco import STAT_NAMES, COCOEvaluator
from perfkit.metrics.topk import TopK

__all__ = ["STAT_NAMES", "COCOEvaluator", "Metric", "TopK"]
