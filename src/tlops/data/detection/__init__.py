"""Object-detection data: exports (COCO, Pascal VOC, YOLO, KITTI) recognised, parsed, validated and split.

Image classification imports :func:`check_not_detection` and :func:`detection_format` from here to refuse a
detection export; the object-detection task prepares one
(:func:`tlops.data.detection.prepare.prepare_detection_data`).
"""

from tlops.data.detection.sniff import check_not_detection, detection_format, detection_formats

__all__ = ["check_not_detection", "detection_format", "detection_formats"]
