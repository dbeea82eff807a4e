"""Image-space segmentation: the head region and its edge colours."""
