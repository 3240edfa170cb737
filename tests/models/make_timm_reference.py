"""Write tests/models/data/timm_vit_tiny.safetensors: a tiny timm ViT's weights, an input and timm's output.

timm is not a dependency (it needs torchvision, and the CI installs only the CPU build of torch), so the
test that our ViT computes what timm computes compares against this file, made once with timm:

    pip install timm          # and torchvision, or run with the stub below
    python tests/models/make_timm_reference.py

timm's VisionTransformer never calls torchvision; where only a CUDA build of torchvision is available
(its C++ operators fail to load against a CPU torch), `--stub-torchvision` imports a placeholder instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OUT = Path(__file__).with_name("data") / "timm_vit_tiny.safetensors"


def _stub_torchvision() -> None:
    import importlib.abc
    import importlib.machinery
    from unittest.mock import MagicMock

    class _Placeholder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = MagicMock()
            module.__path__, module.__spec__, module.__name__ = [], spec, spec.name
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _Placeholder())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub-torchvision", action="store_true", help="import a placeholder torchvision")
    args = parser.parse_args()
    if args.stub_torchvision:
        _stub_torchvision()
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    # The shape of s5cli's `vit_tiny_test` preset: 64 px images, 16 px patches, 32-d, 2 blocks, 2 heads.
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=10
    ).eval()
    with torch.no_grad():  # timm initialises the position embedding small; make every weight matter
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(images)
    tensors = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors.update({"images": images, "features": features.contiguous()})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"timm": timm.__version__, "torch": torch.__version__})
    print(f"wrote {OUT} (timm {timm.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
