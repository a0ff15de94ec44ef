"""Stop where the moving average becomes consistent with a JPEG observation (the quantisation constraint set)."""

from __future__ import annotations

import math

import torch

from archlab import checks
from archlab.stopping.discrepancy import FirstCrossing
from archlab.stopping.variance import json_values

#: τ of :class:`JPEGConsistencyRule`: the fraction of DCT coefficients the moving average may leave outside
#: their quantisation bins. The clean image leaves about 0.01 % (the 8-bit rounding; quality 10, 128 px). On seven
#: images it was chosen on (CBSD68 0001, 0010, 0020, 0030, 0040, 128-px crops; Set12 01 and 02 at ½; JPEG quality
#: 10), the EMA of a ``controlled-64`` fit (lr 0.002) peaked in PSNR with 0.06-0.22 % outside, and τ = 0.15 %
#: stopped 0.00-0.03 dB below each run's best, 0.01 dB on average (results/stopping-jpeg).
DEFAULT_CONSISTENCY_TAU = 1.5e-3

#: The JPEG block size.
BLOCK = 8


def dct_matrix(n: int = BLOCK, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n, n): D_ku = c_k cos(π (2u + 1) k / 2n), c_0 = √(1/n), c_k = √(2/n);
    ``D @ b @ D.T`` is the 2-D transform of a block b (``scipy.fft.dctn(b, norm="ortho")``)."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    u = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = torch.cos(math.pi * (2 * u + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.to(dtype=dtype, device=device)


def block_coefficients(x: torch.Tensor, table: torch.Tensor, dct: torch.Tensor | None = None) -> torch.Tensor:
    """The JPEG coefficients of images on the [0, 1] scale in units of their quantisation steps.

    Per 8×8 block b of the level-shifted 8-bit samples s = 255 x − 128 (the full blocks from the top left; a
    partial block at the right or bottom edge is left out), C = D b Dᵀ / Q elementwise, with D the DCT-II
    (:func:`dct_matrix`) and Q the quantisation ``table`` (8, 8), in natural (row-major) order. The
    encoder stores round(C) (ITU-T T.81, §A.3.4).

    Parameters
    ----------
    x : Tensor (K, C, H, W)
    table : Tensor (8, 8)
    dct : Tensor (8, 8), optional
        :func:`dct_matrix` in the computation's dtype on ``x``'s device, to save building it per call.

    Returns
    -------
    Tensor (K, C, H // 8, W // 8, 8, 8), in ``x``'s dtype (at least float32)
    """
    k, c, h, w = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    s = 255 * x[..., : h - h % BLOCK, : w - w % BLOCK].to(dtype) - 128
    blocks = s.reshape(k, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(3, 4)
    d = dct_matrix(dtype=dtype, device=x.device) if dct is None else dct
    return d @ blocks @ d.T / table.to(dtype=dtype, device=x.device)


class JPEGConsistencyRule(FirstCrossing):
    """The discrepancy principle for JPEG: stop when the moving average falls in the quantisation
    constraint set of the observation.

    A JPEG observation y says, for every block coefficient, only in which quantisation bin the clean
    image's coefficient lies: C_i(x) ∈ [k_i − ½, k_i + ½] with k_i = round(C_i(y)) (:func:`block_coefficients`),
    the quantisation constraint set of Zakhor (1992) and Yang et al. (1993). The clean image is in it; so is y,
    at the bins' centres, with its blocking. A fit moves from a smooth image towards y: once its estimate is in
    the set, the data have nothing more to say about x, and going on fits the coding error, as fitting below the
    noise level fits the noise in the discrepancy principle (Morozov 1966). With the bias-corrected EMA ē_t of
    the outputs and the fraction of coefficients outside their bins

        φ_t = (1/N) #{ i : |C_i(ē_t) − k_i| > ½ },

    a run stops at the first update with φ_t ≤ τ (:data:`DEFAULT_CONSISTENCY_TAU`) and returns ē_t.

    Parameters
    ----------
    y : Tensor (K, C, H, W)
        The decoded JPEG observations on the [0, 1] scale (C = 1: the rule applies to a grey encoding; colour
        JPEG subsamples the chroma, which these bins do not describe).
    table : Tensor (8, 8)
        The luma quantisation table of the encoding, natural order (:func:`archlab.physics.jpeg_table`).
    tau : float
        The fraction of coefficients allowed outside their bins, 0 ≤ τ < 1.

    Attributes
    ----------
    violations : Tensor (K,) or None
        φ of the latest update.

    References
    ----------
    Zakhor, "Iterative procedures for reduction of blocking effects in transform image coding", IEEE Trans.
    Circuits Syst. Video Technol. 2(1):91-95 (1992); Yang, Galatsanos, Katsaggelos, "Regularized reconstruction
    to reduce blocking artifacts of block discrete cosine transform compressed images", IEEE Trans. Circuits
    Syst. Video Technol. 3(6):421-432 (1993); Morozov, "On the solution of functional equations by the method of
    regularization", Soviet Math. Doklady 7:414-417 (1966).

    Examples
    --------
    >>> y = torch.full((1, 1, 8, 8), 0.5)
    >>> rule = JPEGConsistencyRule(y, torch.full((8, 8), 16.0))
    >>> rule.update(10, torch.zeros_like(y)).tolist(), rule.update(20, y + 0.005).tolist()
    ([False], [True])
    >>> rule.detected_iteration.tolist()
    [20]
    """

    def __init__(self, y: torch.Tensor, table: torch.Tensor, tau: float = DEFAULT_CONSISTENCY_TAU):
        checks.image("JPEGConsistencyRule", y, min_size=BLOCK)
        table = torch.as_tensor(table)
        if tuple(table.shape) != (BLOCK, BLOCK) or not bool((table >= 1).all()):
            checks.invalid("JPEGConsistencyRule: table", tuple(table.shape), "an 8×8 table of steps ≥ 1")
        checks.number("JPEGConsistencyRule: tau", tau, low=0, high=1, open_high=True)
        self.table, self.tau = table.detach().double(), float(tau)
        self.bins = torch.round(block_coefficients(y.detach().double(), self.table))
        self._device: tuple | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the stop flags and the kept outputs."""
        super().reset()
        self.violations: torch.Tensor | None = None

    def update(self, iteration: int, outputs: torch.Tensor) -> torch.Tensor:
        """Record the moving averages ē (K, C, H, W) of ``iteration``; return the stop flags, bool (K,)."""
        name = "JPEGConsistencyRule.update"
        iteration = checks.iteration(name, iteration, self._last_iteration)
        outputs = checks.outputs(name, outputs, None if self._output is None else tuple(self._output.shape))
        if outputs.shape[0] != self.bins.shape[0] or outputs.shape[1] != self.bins.shape[1]:
            raise ValueError(f"{name}: outputs must have the observation's {self.bins.shape[0]} runs and "
                             f"{self.bins.shape[1]} channels, got {tuple(outputs.shape)}")
        dtype = torch.promote_types(outputs.dtype, torch.float32)
        if self._device is None or self._device[0].device != outputs.device or self._device[0].dtype != dtype:
            self._device = (dct_matrix(dtype=dtype, device=outputs.device), self.table.to(outputs.device, dtype),
                            self.bins.to(outputs.device, dtype))  # moved once, not at every update
        dct, table, bins = self._device
        outside = (block_coefficients(outputs, table, dct) - bins).abs() > 0.5
        self.violations = outside.flatten(1).float().mean(1)
        return self._cross(iteration, self.violations <= self.tau, outputs)

    def to_dict(self) -> dict:
        """Settings and, under ``"state"``, the state as plain numbers."""
        state = {"iteration": self._last_iteration, "stopped": json_values(self.stopped),
                 "stop_iteration": json_values(self.stop_iteration), "violations": json_values(self.violations)}
        return {"table": self.table.tolist(), "tau": self.tau, "state": state}
