"""The head Lu et al. put after the Inception-ResNet-v2 stem when transferring to AD.

In ``code/Trans_ADNI_Dx_InceptionResNetV2_simplified_wc1_mwc1.py`` of BrainImageNet, the
sex model is cut after its stem (the concatenation after the layer named ``StemEnd``) and
a new, randomly initialised head is trained on the AD data:

``MaxPooling3D(3, strides=2)`` -> ``conv3d_bn(256, 3, padding="valid")`` ->
``conv3d_bn(256, 3, strides=2)`` (``same`` padding) -> a split ``[MaxPooling3D(3,
strides=2) | conv3d_bn(256, 3, strides=2, padding="valid")]`` concatenated (512
channels) -> ``GlobalAveragePooling3D`` -> ``Dropout(0.5)`` -> ``Dense(1, sigmoid)``.

:class:`TransferHead` is that head up to the pooling; the dropout and the output layer are
the ``classifier`` of :class:`~brainmaps.models.inception_resnet_v2.InceptionResNetV2`
(``n_classes`` logits, as every brainmaps classifier, instead of one sigmoid unit). The
strided ``same`` convolution pads one voxel on both sides, where TensorFlow pads an even
axis only at its end: the output grid is the same, its alignment differs by one voxel (the
head is trained anew, so no weights depend on it).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["TransferHead", "transfer_head_grid"]


def _valid(size: int, kernel: int = 3, stride: int = 1) -> int:
    return (size - kernel) // stride + 1 if size >= kernel else 0


def transfer_head_grid(stem_size: int) -> int:
    """Edge length of the head's last feature maps for a stem output of ``stem_size``.

    Parameters
    ----------
    stem_size : int
        Edge length of the stem's output along one axis.

    Returns
    -------
    int
        0 when the axis is too short for the head (it needs a stem output of at least 15,
        i.e. inputs of at least 69 voxels per axis; 96 x 120 x 86 gives 21 x 27 x 19 and a
        last grid of 1 x 2 x 1).
    """
    size = _valid(stem_size, stride=2)  # mpool1
    size = _valid(size)  # conv1, valid
    size = (size + 1) // 2 if size >= 1 else 0  # conv2, stride 2, same
    return _valid(size, stride=2)  # mpool2 / conv3, valid


class TransferHead(nn.Sequential):
    """Lu et al.'s transfer head after the stem (see the module docstring).

    Parameters
    ----------
    in_channels : int
        Channels of the stem's output (512 at ``width=1``).
    channels : int
        Channels of each of its convolutions (256 at ``width=1``).

    Attributes
    ----------
    out_channels : int
        ``2 * channels``: the split concatenates the max-pooled ``conv2`` output and
        ``conv3``.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        from brainmaps.models.inception_resnet_v2 import ConvBN, _chain, _Mixed

        split = _Mixed(
            channels,
            [nn.MaxPool3d(3, stride=2), _chain(channels, [(channels, 3, 2, "valid")])],
        )
        super().__init__(
            OrderedDict(
                pool=nn.MaxPool3d(3, stride=2),
                conv1=ConvBN(in_channels, channels, 3, padding="valid"),
                conv2=ConvBN(channels, channels, 3, stride=2, padding="same"),
                split=split,
            )
        )
        self.out_channels = split.out_channels
