"""Task pipelines built on the ResNeSt backbones."""
