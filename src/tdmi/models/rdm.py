"""Representation Disentanglement Module (RDM): motion M -> useful Mu and noisy Mn (paper section 3.3, eq. 6).

``Mu = sigmoid(MLP_u(GAP(M))) * M`` and ``Mn = sigmoid(MLP_n(GAP(M))) * M`` with two independent MLPs
(C -> hidden -> C, ReLU between). The paper gives neither the hidden width nor the initialisation; both follow the
authors' later code (docs/architecture.md): 48 -> 128 -> 48, PyTorch's default Linear weights and zero biases
(``init="lineage"``), so the two gates start at different values. The MI objective then pulls task-relevant
motion into Mu and pushes the rest into Mn.

Table 7's alternative factorisation, ``channel_split``, has no parameters: the first ceil(C/2) channels of M are
the useful part and the others the noisy part. It is written as two fixed binary channel masks so that Mu and Mn
keep M's width and everything downstream (fusion, MI heads) is unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from tdmi.models.blocks import INIT_STD, init_normal_

FACTORISATION_CHOICES = ("gates", "channel_split")
INIT_CHOICES = ("lineage", "normal")
HIDDEN_BIAS_INIT = 0.1
"""Initial bias of the gates' hidden layer under ``init="normal"`` (ours; see ChannelGate)."""


class ChannelGate(nn.Module):
    """Squeeze-and-excitation style channel gate: ``GAP -> Linear(C, hidden) -> ReLU -> Linear(hidden, C) -> sigmoid``.

    Args:
        channels: C.
        hidden: the MLP's hidden width.
        init: ``"lineage"``: PyTorch's default Linear weights (uniform, fan-in scaled) with zero biases, as the
            authors' later code leaves them after its ``init_weights``. ``"normal"``: weights N(0, ``init_std``)
            and a hidden bias of 0.1 (tdmi's earlier choice).
        init_std: std of the weights under ``init="normal"``.

    ``forward(x [B, C, h, w]) -> [B, C, 1, 1]`` gate values in (0, 1).
    """

    def __init__(self, channels: int, hidden: int = 128, init: str = "lineage", init_std: float = 0.001):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"RDM hidden width must be >= 1, got {hidden}")
        if init not in INIT_CHOICES:
            raise ValueError(f"RDM init={init!r}; choose one of {', '.join(INIT_CHOICES)}")
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        if init == "lineage":
            for layer in (self.mlp[0], self.mlp[2]):
                nn.init.zeros_(layer.bias)
            return
        # N(0, 0.001) weights: both gates start at about sigmoid(0) = 0.5, so Mu = Mn = M / 2 until training
        # separates them. M comes out of a ReLU, so its pooled vector is non-negative and a zero hidden bias would
        # leave about half the hidden units dead from the start (the sign of W1 . GAP(M)); 0.1 keeps them all alive.
        init_normal_(self)
        if init_std != INIT_STD:  # redraw only when asked, so default models keep their exact init
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=init_std)
        nn.init.constant_(self.mlp[0].bias, HIDDEN_BIAS_INIT)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3))))[:, :, None, None]


class RepresentationDisentanglement(nn.Module):
    """Split motion M into useful and noisy parts.

    Args:
        channels: C, the width of M.
        hidden: hidden width of the two gates' MLPs (``gates`` only; the authors' later code: 128).
        factorisation: ``gates`` (paper eq. 6) or ``channel_split`` (table 7's alternative).
        init, init_std: the gates' initialisation (``gates`` only; see :class:`ChannelGate`).

    ``forward(motion [B, C, h, w]) -> (useful [B, C, h, w], noisy [B, C, h, w])``.
    """

    def __init__(self, channels: int, hidden: int = 128,
                 factorisation: Literal["gates", "channel_split"] = "gates", init: str = "lineage",
                 init_std: float = 0.001):
        super().__init__()
        if factorisation not in FACTORISATION_CHOICES:
            raise ValueError(f"factorisation={factorisation!r}; choose one of {', '.join(FACTORISATION_CHOICES)}")
        self.channels = channels
        self.factorisation = factorisation
        if factorisation == "gates":
            self.useful_gate = ChannelGate(channels, hidden, init, init_std)
            self.noisy_gate = ChannelGate(channels, hidden, init, init_std)
        else:
            if channels < 2:
                raise ValueError(f"channel_split needs at least 2 channels, got {channels}")
            useful_mask = torch.zeros(1, channels, 1, 1)
            useful_mask[:, : (channels + 1) // 2] = 1.0
            self.register_buffer("useful_mask", useful_mask, persistent=False)

    def gates(self, motion: Tensor) -> tuple[Tensor, Tensor]:
        """The channel weights ``([B or 1, C, 1, 1], [B or 1, C, 1, 1])`` applied to M (for logging/inspection)."""
        if self.factorisation == "gates":
            return self.useful_gate(motion), self.noisy_gate(motion)
        return self.useful_mask, 1.0 - self.useful_mask

    def forward(self, motion: Tensor) -> tuple[Tensor, Tensor]:
        if motion.dim() != 4 or motion.shape[1] != self.channels:
            raise ValueError(f"RDM expects motion [B, {self.channels}, h, w], got {tuple(motion.shape)}")
        useful_gate, noisy_gate = self.gates(motion)
        return useful_gate * motion, noisy_gate * motion
