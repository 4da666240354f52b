"""Export the seed-like model: torchvision EfficientNetV2-S (random weights), NHWC float
input `input_1` of 1x384x384x3 with a dynamic batch, plus a float64 reference.

Run where torch is (the GPU machine's python3); torch is not a dependency of the package:

    python3 scripts/export_efficientnet.py --output models/effnetv2s.onnx

Also writes <output>.ref.npz: 4 random inputs (float32) and the model's float64 output
for them, so TensorRT tests (which run without torch) can measure relative error.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import torch
    import torchvision

    p = argparse.ArgumentParser()
    p.add_argument("--output", required=True)
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--opset", type=int, default=17)
    a = p.parse_args()

    torch.manual_seed(0)
    net = torchvision.models.efficientnet_v2_s(weights=None).eval()

    class NHWC(torch.nn.Module):
        """The seed's model took NHWC input (a Keras export); keep that contract."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.permute(0, 3, 1, 2))

    model = NHWC(net).eval()
    dummy = torch.zeros(1, a.size, a.size, 3)
    kwargs = dict(input_names=["input_1"], output_names=["logits"], opset_version=a.opset,
                  dynamic_axes={"input_1": {0: "batch"}, "logits": {0: "batch"}})
    try:  # the TorchScript exporter: plain opset-17 graph, dynamic batch via dynamic_axes
        torch.onnx.export(model, (dummy,), a.output, dynamo=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - newer torch may have dropped it
        print(f"TorchScript export failed ({exc}); using the dynamo exporter")
        torch.onnx.export(model, (dummy,), a.output, dynamo=True, external_data=False,
                          **{**kwargs, "opset_version": max(a.opset, 18)})

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(4, a.size, a.size, 3)).astype(np.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.no_grad():
        y = model.double().to(device)(torch.from_numpy(x).double().to(device)).cpu().numpy()
    np.savez(a.output + ".ref.npz", x=x, y=y)
    print(f"wrote {a.output} and {a.output}.ref.npz (logits {y.shape}, device {device})")


if __name__ == "__main__":
    main()
