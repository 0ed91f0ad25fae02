"""Model files of architectures vhsup does not build itself, through spandrel.

Community upscalers come in dozens of architectures (SwinIR, HAT, DAT, SPAN,
RealCUGAN, OmniSR, ...). spandrel recognises about forty of them from their
state-dict keys and builds the network with the right hyperparameters, so
vhsup hands it any file its own detector does not claim. vhsup still reads
the file itself (:func:`vhsup.weights.safeload.load_state_dict_file`, never
running code from it) and gives spandrel only the tensors.

spandrel is an optional extra (``pip install 'vhsup[community]'``): it needs
torchvision, and torchvision must be the build made for the installed torch.
Without it, vhsup's own architectures load as before and any other file gets
an error that says what to install.
"""

from __future__ import annotations

import os
import types
import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..errors import UnknownArchitecture, VhsupError

INSTALL_HINT = "pip install 'vhsup[community]'"

# Window-attention nets (SwinIR, HAT, ...) call torch.meshgrid without
# indexing= on every forward; torch's notice about that is not the user's.
warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)


@lru_cache(maxsize=1)
def _import_spandrel() -> tuple[types.ModuleType | None, str]:
    """(the spandrel module or None, its version or why it is missing and what to do)."""
    try:
        import spandrel
    except ModuleNotFoundError as exc:
        if exc.name == "spandrel":
            return None, f"not installed ({INSTALL_HINT})"
        return None, _broken(exc)
    except Exception as exc:  # noqa: BLE001 - a torchvision built for another torch fails in many ways
        return None, _broken(exc)
    return spandrel, str(getattr(spandrel, "__version__", "?"))


def _broken(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:120]
    return (
        f"installed but does not import ({type(exc).__name__}: {text}); it needs the torchvision built for "
        f"torch {torch.__version__.split('+')[0]}"
    )


def status() -> str:
    """One line for ``vhsup models list``: can community files be loaded here?"""
    module, info = _import_spandrel()
    if module is None:
        return f"spandrel {info}: only vhsup's own architectures load from files (spandrel adds ~40 more)"
    count = len(list(module.MAIN_REGISTRY.architectures()))
    return f"spandrel {info}: files of {count} more architectures load through it"


def available() -> bool:
    return _import_spandrel()[0] is not None


class CommunityNet(torch.nn.Module):
    """A spandrel-built network behind vhsup's module contract.

    forward(x: (N, C, H, W) in [0, 1]) -> (N, C, H*scale, W*scale), any H and
    W: the input is padded to what the network needs (a minimum size, a
    multiple, a square) by mirroring its edge, and the output is cropped
    back, so the engine's tiles need not know the network's rules.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        call,
        scale: int,
        minimum: int,
        multiple: int,
        square: bool,
        one_at_a_time: bool = False,
    ):
        super().__init__()
        self.net = net
        self._call = call
        # spandrel's own call functions are written for one picture (DRUNet
        # builds a noise map of batch 1), so those run picture by picture.
        self.one_at_a_time = one_at_a_time
        self.scale = scale
        self.minimum, self.multiple, self.square = minimum, multiple, square

    def _padded(self, n: int) -> int:
        n = max(n, self.minimum)
        return -(-n // self.multiple) * self.multiple

    def macs_per_px(self, sizes: tuple[int, int] = (32, 48)) -> float:
        """Multiply-accumulates per input pixel, counted on two small forwards.

        torch's FlopCounterMode sees every conv, matmul and attention call,
        so this works for any architecture; elementwise work is not counted
        (as in vhsup's own figures). The slope between two sizes leaves out
        work that does not scale with the picture (SPAN re-folds its conv
        weights on every call). It runs on real tensors: some networks cache
        state in forward, which a meta-device run would corrupt. Returns 0.0
        if the network will not run at these sizes.
        """
        from torch.utils.flop_counter import FlopCounterMode

        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        counts = []
        for size in sizes:
            try:
                with FlopCounterMode(display=False) as counter, torch.no_grad():
                    self(torch.rand(1, 3, size, size, device=device))
            except Exception:  # noqa: BLE001 - a count is a nicety; loading must not fail on it
                return 0.0
            counts.append(counter.get_total_flops() / 2)
        small, large = sizes
        return max(0.0, (counts[1] - counts[0]) / (large * large - small * small))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self._padded(h), self._padded(w)
        if self.square:
            ph = pw = max(ph, pw)
        if (ph, pw) != (h, w):
            # reflect needs the pad to be smaller than the side it mirrors
            mode = "reflect" if ph - h < h and pw - w < w else "replicate"
            x = F.pad(x, (0, pw - w, 0, ph - h), mode=mode)
        if self.one_at_a_time and x.shape[0] > 1:
            y = torch.cat([self._run(x[i : i + 1]) for i in range(x.shape[0])])
        else:
            y = self._run(x)
        return y[..., : h * self.scale, : w * self.scale]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        y = self._call(self.net, x)
        if isinstance(y, (tuple, list)):  # some restoration nets also return side outputs
            y = y[0]
        return y


def _forward(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    return model(image)


@dataclass
class CommunityModel:
    """What spandrel found in a file, ready for the registry to describe."""

    module: CommunityNet
    arch: str
    purpose: str
    scale: int
    in_channels: int
    out_channels: int
    supports_half: bool
    supports_bfloat16: bool
    size_multiple: int
    tiling: str  # "supported", "discouraged" or "internal"
    tags: list[str]
    loader: str  # "spandrel 0.4.2"


def load(state: dict[str, torch.Tensor], path: str | os.PathLike[str], unknown: UnknownArchitecture) -> CommunityModel:
    """Build the network of a state dict vhsup's own detector did not claim.

    ``unknown`` is what vhsup's detector said; it leads the error when
    spandrel is missing or does not know the file either.
    """
    spandrel, info = _import_spandrel()
    if spandrel is None:
        raise VhsupError(
            f"{unknown.reason}; files of other architectures (SwinIR, HAT, SPAN, RealCUGAN, ...) load "
            f"through spandrel, which is {info}",
            path,
        )
    state = spandrel.canonicalize_state_dict(dict(state))
    try:
        with warnings.catch_warnings():
            # Some of spandrel's networks use torch calls that warn about
            # future defaults while building; nothing a user can act on.
            warnings.simplefilter("ignore", UserWarning)
            desc = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        sample = ", ".join(sorted(state)[:4])
        raise VhsupError(f"neither vhsup nor spandrel {info} knows this model (keys like {sample})", path) from None
    except Exception as exc:  # noqa: BLE001 - spandrel's loaders raise whatever the shapes provoke
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise VhsupError(f"spandrel {info} could not load this model: {first}", path) from None
    arch = desc.architecture.id
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise VhsupError(
            f"spandrel loads this as {arch}, a {desc.purpose.lower()} model that needs a mask; "
            "vhsup runs upscaling and restoration models",
            path,
        )
    if desc.purpose == "FaceSR":
        raise VhsupError(
            f"spandrel loads this as {arch}, a face restoration model for cropped, aligned faces; "
            "vhsup runs models for whole frames",
            path,
        )
    req = desc.size_requirements
    tiling = {1: "supported", 2: "discouraged", 3: "internal"}.get(desc.tiling.value, "supported")
    # The descriptor's call function is how spandrel runs the network (some
    # need a wrapper around forward: an extra input channel, a rescale); it is
    # private API, so forward alone is the fallback. spandrel's default is a
    # lambda defined in the descriptor's __init__; any other was written for
    # that architecture, for one picture at a time.
    call = getattr(desc, "_call_fn", None)
    custom = call is not None and "ModelDescriptor.__init__" not in getattr(call, "__qualname__", "")
    module = CommunityNet(
        desc.model,
        call or _forward,
        int(desc.scale),
        int(req.minimum),
        int(req.multiple_of),
        bool(req.square),
        one_at_a_time=custom,
    )
    return CommunityModel(
        module=module,
        arch=arch,
        purpose=desc.purpose,
        scale=int(desc.scale),
        in_channels=int(desc.input_channels),
        out_channels=int(desc.output_channels),
        supports_half=bool(desc.supports_half),
        supports_bfloat16=bool(desc.supports_bfloat16),
        size_multiple=int(req.multiple_of),
        tiling=tiling,
        tags=[str(t) for t in desc.tags],
        loader=f"spandrel {info}",
    )
