r"""DPsurv's second level: one ENNreg expert per patch prototype, fused by the slide's mixture
proportions.

For a case with PANTHER summary :math:`(\pi_c, \mu_c, \Sigma_c)_{c=1..C}`, expert :math:`c` reads
:math:`x_c = [\pi_c, \mu_c, \Sigma_c]` (z-scored per component on the training cases when
``standardise``) with proto-space position :math:`z_c = \mu_c`, and returns a GRFN
:math:`\tilde Y_c \sim \mathcal N(\mu_{x_c}, \sigma^2_{x_c}, h_{x_c})` on log survival time. The
case's survival curve and band are the :math:`\pi`-mixture of the experts' belief functions
(:func:`~clinfuse.methods.dpsurv.grfn.mixture_survival`). In tabular mode :math:`C = 1`,
:math:`\pi = 1` and :math:`x = z` is the feature vector.

The risk score is :math:`-\sum_j S(e_j)` over the bin edges (the official code's), which is
linear in :math:`\pi`: :math:`r = \sum_c \pi_c r_c` with :math:`r_c = -\sum_j S_c(e_j)`. The
contribution of component :math:`c` to a case's risk is the change when :math:`c` is removed
and the other proportions renormalised,
:math:`\Delta_c = r - \frac{r - \pi_c r_c}{1 - \pi_c} = \pi_c\,\frac{r_c - r}{1 - \pi_c}`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from clinfuse.methods.dpsurv.ennreg import ENNreg
from clinfuse.methods.dpsurv.grfn import GRFN, SurvivalBand, mixture_survival

__all__ = ["DPsurvNet", "component_contributions"]


class DPsurvNet(nn.Module):
    """The bank of experts with its input standardisation (float64).

    Shape:
        forward: x ``(B, C, F)``, z ``(B, C, P)`` -> GRFN of ``(B, C)`` tensors;
        band: + pi ``(B, C)``, t ``(T,)`` -> :class:`SurvivalBand` ``(B, T)``.
    """

    def __init__(
        self,
        n_experts: int,
        n_prototypes: int,
        n_features: int,
        proto_dim: int,
        x_mean: np.ndarray | None = None,
        x_std: np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.experts = ENNreg(n_experts, n_prototypes, n_features, proto_dim, generator=gen)
        shape = (n_experts, n_features)
        mean = np.zeros(shape) if x_mean is None else np.asarray(x_mean, dtype=np.float64)
        std = np.ones(shape) if x_std is None else np.asarray(x_std, dtype=np.float64)
        self.register_buffer("x_mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("x_std", torch.as_tensor(std, dtype=torch.float64))

    def scale(self, x: Tensor) -> Tensor:
        """Standardised expert inputs."""
        return (x.double() - self.x_mean) / self.x_std

    def forward(self, x: Tensor, z: Tensor) -> GRFN:
        return self.experts(self.scale(x), z.double())

    def band(self, t: Tensor, pi: Tensor, x: Tensor, z: Tensor, lam: float) -> SurvivalBand:
        """The fused survival band at times ``t``."""
        mu, var, h = self(x, z)
        return mixture_survival(t.double(), pi.double(), mu, var, h, lam)


def component_contributions(pi: np.ndarray, component_risk: np.ndarray) -> np.ndarray:
    r"""Risk change :math:`\Delta_c = \pi_c (r_c - r)/(1 - \pi_c)` when component ``c`` is removed
    (0 where :math:`\pi_c = 1`, which cannot be removed).

    Shape:
        pi, component_risk ``(B, C)``. Output ``(B, C)``.

    Example:
        >>> component_contributions(np.array([[0.5, 0.5]]), np.array([[1.0, 3.0]]))
        array([[-1.,  1.]])
    """
    pi = np.asarray(pi, dtype=np.float64)
    rc = np.asarray(component_risk, dtype=np.float64)
    r = (pi * rc).sum(1, keepdims=True)
    denom = 1.0 - pi
    return np.where(denom > 1e-12, pi * (rc - r) / np.where(denom > 1e-12, denom, 1.0), 0.0)
