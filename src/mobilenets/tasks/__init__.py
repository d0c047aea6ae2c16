"""What each task supplies to the one training loop (:mod:`mobilenets.training`): data, model, loss, metrics
and post-processing. A task is a small object (:class:`~mobilenets.tasks.base.Task`); the loop never
branches on which one it runs.

- ``classification.py``: image folders / the built-in digits, cross-entropy, top-1 / top-5.
- ``detection.py``: COCO / VOC / the built-in shapes, SSDLite's multibox loss, COCO AP (pycocotools).
- ``segmentation.py``: VOC / image-mask folders / the built-in shapes, cross-entropy with an ignore index,
  mIoU.
"""

from __future__ import annotations

from .base import EvalContext, Task, TaskData

__all__ = ["get_task", "Task", "TaskData", "EvalContext"]


def get_task(config) -> Task:
    """The task object for ``config.task``."""
    if config.task == "classification":
        from .classification import ClassificationTask

        return ClassificationTask(config)
    if config.task == "detection":
        from .detection import DetectionTask

        return DetectionTask(config)
    from .segmentation import SegmentationTask

    return SegmentationTask(config)
