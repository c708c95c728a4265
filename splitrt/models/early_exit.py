"""An early exit: a small FCOS detector on the teacher's tensor at a cut the edge computes anyway.

A frame split at that cut has already paid for the layers up to it when it
goes on the link.  The exit turns the same tensor into detections for a few
milliseconds more, so the device has a result of its own if the server's
answer comes too late (a hedged frame, ``splitrt.edge.hedge``).  Run from
the image it is also the cheapest local model.

One level at the cut's stride: the shapes set's objects (20-64 px across)
all fall in FCOS's first size range, and dilated convolutions widen the
receptive field instead of extra pyramid levels.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.image_list import ImageList

LEVEL = "0"


class ExitNeck(nn.Module):
    """Widens and looks around the cut's tensor: 3x3, then 3x3 dilated 2 and 4."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for dilation in (1, 2, 4):
            layers += [
                nn.Conv2d(cin, channels, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            cin = channels
        self.body = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, cut_features: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict([(LEVEL, self.body(cut_features))])


class EarlyExit(nn.Module):
    """FCOS (torchvision's head, loss and post-processing) on one level built from the cut's tensor."""

    def __init__(
        self,
        cut: str,
        in_channels: int,
        stride: int,
        num_classes: int,
        image_size: int,
        channels: int = 64,
        score_thresh: float = 0.05,
        detections_per_img: int = 50,
    ) -> None:
        super().__init__()
        self.cut = cut
        neck = ExitNeck(in_channels, channels)
        # The "backbone" of this FCOS is the neck alone: the layers before the cut belong to the
        # teacher and are never copied here.
        self.detector = FCOS(
            neck,
            num_classes,
            min_size=image_size,
            max_size=image_size,
            head=FCOSHead(channels, num_anchors=1, num_classes=num_classes, num_convs=1),
            anchor_generator=AnchorGenerator(((stride,),), ((1.0,),)),
            score_thresh=score_thresh,
            detections_per_img=detections_per_img,
        )

    def forward(self, images: ImageList, cut_features: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Training: FCOS losses for a preprocessed batch (``images``, ``targets`` from the transform)."""
        levels = list(self.detector.backbone(cut_features).values())
        head_outputs = self.detector.head(levels)
        anchors = self.detector.anchor_generator(images, levels)
        per_level = [x.size(2) * x.size(3) for x in levels]
        return self.detector.compute_loss(targets, head_outputs, anchors, per_level)

    def detect(self, cut_features: Tensor, images: ImageList) -> list[dict[str, Tensor]]:
        """Detections in the preprocessed images' coordinates (the caller rescales to the originals)."""
        from .detection import predict_fcos

        return predict_fcos(self.detector, images, self.detector.backbone(cut_features))
