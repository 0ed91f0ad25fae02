"""Every random choice of the degradation, from one CPU torch.Generator.

The trainer saves and restores that generator's state with its checkpoint,
so the same state must give the same LR batch bit for bit. Scalars are
drawn here on the CPU; big noise tensors come from :meth:`Draw.noise_gen`,
which is the same generator on the CPU and a generator seeded from it on
an accelerator (drawing megapixels of noise on the CPU and copying them
over would cost more than the rest of the degradation).
"""

from __future__ import annotations

import torch


class Draw:
    """Scalar draws (uniform, chance, weighted pick) from ``generator``."""

    def __init__(self, generator: torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError("the degradation generator must be a CPU torch.Generator")
        self.g = generator
        self._device_gens: dict[torch.device, torch.Generator] = {}

    def uniform(self, lo: float, hi: float) -> float:
        u = torch.rand((), generator=self.g, dtype=torch.float64).item()
        return lo + (hi - lo) * u

    def chance(self, p: float) -> bool:
        """True with probability ``p`` (no draw when p is 0 or 1)."""
        if p <= 0.0:
            return False
        if p >= 1.0:
            return True
        return self.uniform(0.0, 1.0) < p

    def integer(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi] inclusive."""
        return int(torch.randint(int(lo), int(hi) + 1, (), generator=self.g).item())

    def odd(self, lo: int, hi: int) -> int:
        """Uniform odd integer in [lo, hi] (both odd)."""
        return lo + 2 * self.integer(0, (hi - lo) // 2)

    def pick(self, weights) -> int:
        """Index drawn with probability proportional to ``weights``."""
        total = float(sum(weights))
        u = self.uniform(0.0, total)
        acc = 0.0
        last = 0
        for i, w in enumerate(weights):
            if w > 0:
                last = i
                acc += w
                if u < acc:
                    return i
        return last

    def poisson(self, mean: float) -> int:
        if mean <= 0:
            return 0
        return int(torch.poisson(torch.tensor([float(mean)], dtype=torch.float64), generator=self.g).item())

    def noise_gen(self, device: torch.device) -> torch.Generator:
        """The generator for tensors made on ``device``."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.g
        if device not in self._device_gens:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(torch.randint(0, 2**62, (), generator=self.g).item()))
            self._device_gens[device] = gen
        return self._device_gens[device]

    def randn(self, shape, device, dtype=torch.float32) -> torch.Tensor:
        return torch.randn(shape, generator=self.noise_gen(device), device=device, dtype=dtype)

    def rand(self, shape, device, dtype=torch.float32) -> torch.Tensor:
        return torch.rand(shape, generator=self.noise_gen(device), device=device, dtype=dtype)
