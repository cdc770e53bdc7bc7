"""Graph conversion: trace, fold BatchNorm, swap ReLUs for neurons, check the spiking path."""
from adacal.convert.fold_bn import ChannelAffine, fold_batchnorm
from adacal.convert.prepare import prepare
from adacal.convert.trace import trace

__all__ = ["ChannelAffine", "fold_batchnorm", "prepare", "trace"]
