"""Object detection and instance segmentation: Faster/Mask R-CNN on ResNeSt, COCO-style evaluation."""
