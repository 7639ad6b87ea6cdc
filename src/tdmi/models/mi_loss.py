"""The mutual-information objective of TDMI (paper section 3.4, eq. 7-13), as four separately logged terms.

Paper eq. 13:  L_MI = I(Mu; Mn) - I(M; Mu) + I(Mu; y | F~) + I(F; y | F~),  and  L = L_H + alpha * L_MI  (alpha = 1).

Four formulations (``formulation``); the choice and its evidence are in docs/architecture.md:

``"vsd"``: bounded Variational Self-Distillation terms. Every term is >= 0 and minimised, so no term
carries a negative weight. Distributions are spatial softmaxes over the N = h*w pixels of one heatmap channel
(b, j) at temperature T (0.05: at a sigma-3 Gaussian 99.93% of the mass lies within 3 px of the peak). Students
use the epsilon-floor ``log q^ = logaddexp(log(1-eps) + log_softmax(s/T), log(eps/N))``, which keeps every KL in
[0, log(N/eps)] (18.05 nats at 96x72, eps=1e-4); teachers are detached softmaxes, with ``xlogy`` so 0*log 0 = 0.

=====================  ===========================================  ==================================================
paper term (eq. 13)    our term (key)                               why this form
=====================  ===========================================  ==================================================
+ I(Mu; Mn)  (eq. 7)   L1 = mean_bj BC(q_Mu, q_Mn)                  True I(Mu;Mn) is degenerate: both are positive
                       ``mi_useful_noisy``, in [0, 1]               channel rescalings of the same M. The Bhattacharyya
                                                                    overlap of their predictions is a scale-sensitive
                                                                    surrogate: Mn must not predict what Mu predicts.
- I(M; Mu)  (eq. 8-9)  L2 = mean_bj w KL(sg q_M || q^_Mu)           max I(M;Mu) = H(Mu) is infinite; the intent "Mu
                       ``mi_motion_useful``, in [0, log(N/eps)]     keeps M's task content" is VSD sufficiency
                                                                    min I(M; y | Mu), exact since Mu = f(M).
+ I(Mu; y | F~)        L3 = mean_bj w m3 KL(sg q_Mu || q^_H)        eq. 11's I(X;y) - I(X;F~) drops I(X;F~|y), which is
  (eq. 10-11)          ``mi_useful_label``, in [0, log(N/eps)]      large because F~ is computed from Mu; VSD's
                                                                    E KL(p(y|X) || p(y|F~)) bounds the conditional MI
                                                                    instead.
+ I(F; y | F~)         L4 = mean_bj w m4 KL(sg q_F || q^_H)         as L3, with the frozen HRNet head on F (the static
  (eq. 12)             ``mi_visual_label``, in [0, log(N/eps)]      image prediction) as the calibrated teacher.
=====================  ===========================================  ==================================================

- q_M, q_Mu, q_Mn = softmax(h_m(.)/T): ``h_m`` is an auxiliary motion head (conv C -> J) owned by this objective.
  It is trained only by ``L_aux = MSE(h_m(sg M), G) + MSE(h_m(sg Mu), G)`` (target-weighted); inside the MI terms it
  is applied as a functional conv on detached weights, so "training the estimator" stays separate from "shaping
  the representation" (as VSD trains its classifier with cross-entropy only).
- q_H = softmax(H/T) of the model's heatmaps; q_F = softmax(h_hr(F)/T) with h_hr the frozen backbone
  ``final_layer``, supplied by the model as ``static_heatmaps`` and always detached here.
- w: joint target weights; they weight L2-L4 (terms against the label's joints). L1 compares two predictions
  with each other and is not weighted. m3, m4 (``gate_distillation``): detached gates
  1[CE(p_y, q^_teacher) < CE(p_y, q^_H)] with p_y = softmax(G/T): distil only where the teacher is better than the
  fused prediction, which is where the conditional MI can be positive, and so a diffuse teacher cannot blur H.
  ``gate_distillation=False`` gives the paper-literal VSD use (m = 1).
- Output: ``total = alpha * (1/N) * (L1 + L2 + L3 + L4) + L_aux``. The 1/N puts the terms on the per-pixel scale of
  FAMI/TDMI's 'mean' reduction and of the pixel-mean MSE, so the paper's alpha = 1 keeps its meaning.

``"balanced"`` (default since the SynthTrack benchmark chose it on dev, docs/results.md step 5): the VSD terms with
four defects of ``"vsd"`` corrected (measured on a model trained with ``"vsd"``; docs/results.md, "The MI objective");
``"vsd"`` stays selectable for comparison:

- Gradient scale. d KL(p || softmax(z/T)) / dz = (q - p) / T, so at T = 0.05 every distillation term pushed 20x
  harder than its 1/N-averaged value suggests (6.6x the heatmap gradient on the useful gate, cosine -0.62). Each
  KL term is multiplied by T, which makes its logit gradient (q - p) / N: the scale of the pixel-mean MSE.
- I(M; Mu). ``KL(q_M || q_Mu)`` on every joint is minimised by a useful gate of 1: Mu copying all of M, noise
  included, which works against the split. Here M is distilled into Mu only on joints where M *locates the joint
  better* than Mu (accuracy gate below): Mu must keep M's task content, not its noise.
- I(Mu; Mn). The Bhattacharyya overlap of the probe's predictions measures how diffuse q_Mn is (Mn = 0 scores
  about as much as Mn = Mu) and has zero gradient where both gates are equal. Here the overlap is the cosine
  similarity of the two features, ``mean_b cos(Mu_b, Mn_b)`` over their flattened [C, h, w] (in [0, 1]: both are
  non-negative gatings of M): 1 when the gates are proportional, 0 when they select disjoint channels, and blind
  to scale, so shrinking Mn to zero does not lower it. The RDM's ``init_std`` must break the gates' symmetry.
- Distillation gates. ``1[CE(p_y, q_teacher) < CE(p_y, q_H)]`` rewards the sharper distribution, not the better
  one: with it the weaker single-frame teacher was distilled into H on 38% of visible joints. The accuracy gate
  ``1[e_teacher + 1 < e_student]``, e = distance in heatmap pixels from a map's argmax to the label's, distils
  only where the teacher puts the joint at least one pixel closer to the label.
- Output: ``total = alpha * (L1 + T * (L2 + L3 + L4)) / N + L_aux``, so alpha = 1 keeps every term on the
  per-pixel scale of the heatmap loss.

``"fami"``: the literal FAMI-Pose estimators that TDMI most likely reused (kept for ablation, not recommended):
``L_MI = ff(Mu, Mn) - ff(M, Mu) + [fl(Mu, H) - ff(Mu, F~)] + [fl(F, H) - ff(F, F~)]``. Both estimators are
``kl_div(input=softmax(teacher.detach()/T), target=softmax(student/T), reduction='mean')``, i.e. the mean over all
elements of ``q log q - q p`` (q student, p teacher): probabilities where kl_div expects log-probabilities, so the
value is negative and not a KL. ``ff`` softmaxes each feature channel over space; ``fl`` applies a head to its
first argument. One deviation: FAMI's fl applies the frozen HRNet ``final_layer`` to motion features too; this
objective does not own the backbone, so fl(Mu, H) uses the motion head h_m (detached weights), and fl(F, H) uses
``static_heatmaps`` (= final_layer(F), as in FAMI). Each returned term carries its eq.-13 sign, so
``total = alpha * (sum of terms) + L_aux`` (no 1/N: 'mean' already divides by N).

``"lineage"``: the four terms exactly as the authors' later code (JM-Pose, same group, same class names and
schedule as TDMI; docs/architecture.md) computes them, the best evidence of what produced TDMI's published numbers:
``L_MI = 2 ff(Mu, Mn) - ff(M, Mu) + [fl(Mu, H) - ff(Mu, F~)] + [fl(F, H) - ff(F, F~)]``, alpha = 1. ``ff(a, b)`` is
:func:`fami_divergence` over feature channels (a detached, except in ff(Mu, Mn), where both sides get gradients),
T = 0.05, mean over B*C*N. ``fl(X, H)`` is the same estimator between a *probe*'s heatmaps of X (detached: no
gradient reaches X) and H: the probe is the frozen HRNet ``final_layer`` (``label_probe``), so fl(F, H) reads
``static_heatmaps``. The lineage's mathematical quirk is kept on purpose, since it produced the published
ablations: kl_div is given probabilities where it expects log-probabilities, so no term is a KL (the values are
negative) and minimising ``2 ff(Mu, Mn) - ff(M, Mu)`` mostly moves the gate sizes (useful up, noisy down) rather
than separating content. Its label terms act on H with a gradient of the heatmap loss's order, unlike
``balanced``'s. Two widths the lineage never meets (its TDE width equals HRNet-W48's 48): where Mu's width is not
the probe's input width (the W8 proxy: 16 vs 8), Mu is probed by h_m instead (detached weights, as in ``fami``);
where F's width differs from F~'s, ff(F, F~) pairs F's channels with F~'s first ones.

Missing parts of the model: ``noisy = None`` (RDM disabled) makes ``mi_useful_noisy`` 0. ``useful = None`` as well
makes ``mi_motion_useful`` 0 and uses M in place of Mu as the motion teacher in term 3 (and in L_aux).

All arithmetic is float32 (fp16/bf16 inputs are upcast before the softmaxes and reductions); every op is
log_softmax, logsumexp or logaddexp, so the terms are finite for any finite logits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdmi.models.losses import JointsMSELoss
from tdmi.precision import autocast_off

if TYPE_CHECKING:
    from tdmi.config import ModelConfig

FORMULATIONS = ("vsd", "balanced", "fami", "lineage")
LINEAGE_OVERLAP_WEIGHT = 2.0
"""Weight of ff(Mu, Mn) in the lineage's motion term (``2 * mi_fm_fn - mi_fm_f``)."""
TERM_NAMES = ("mi_useful_noisy", "mi_motion_useful", "mi_useful_label", "mi_visual_label")


class MIInputs(Protocol):
    """What the objective reads from the model output (``TDMIOutput`` or any object with these attributes).

    All spatial sizes equal the heatmap size [h, w]; C is the TDE width, J the number of joints.
    """

    heatmaps: Tensor
    """H = head(F~), ``[B, J, h, w]``."""
    motion: Tensor
    """M, ``[B, C, h, w]``."""
    useful: Tensor | None
    """Mu, ``[B, C, h, w]``; None when the model has no RDM."""
    noisy: Tensor | None
    """Mn, ``[B, C, h, w]``; None when the RDM is disabled."""
    visual: Tensor
    """F = key-frame stage-4 feature, ``[B, C, h, w]`` (read by the ``fami`` formulation only)."""
    fused: Tensor
    """F~, ``[B, C, h, w]`` (read by the ``fami`` formulation only)."""
    static_heatmaps: Tensor
    """h_hr(F) = frozen backbone final_layer applied to F, ``[B, J, h, w]``."""


# ----------------------------------------------------------------------------------------------------------------
# Distribution helpers. A "map" is one channel [h, w] of one sample; distributions are over its N = h*w pixels.


def spatial_log_softmax(logits: Tensor, temperature: float) -> Tensor:
    """``[B, K, h, w]`` -> float32 log-probabilities ``[B, K, N]``, a softmax over the pixels of each map at T."""
    return torch.log_softmax(logits.flatten(2).float() / temperature, dim=-1)


def floor_log_probs(log_probs: Tensor, epsilon: float) -> Tensor:
    """Log of ``(1 - eps) q + eps / N`` from ``log q`` ``[..., N]``; >= log(eps/N) everywhere, so KL <= log(N/eps)."""
    num_pixels = log_probs.shape[-1]
    floor = torch.full((), math.log(epsilon / num_pixels), dtype=log_probs.dtype, device=log_probs.device)
    return torch.logaddexp(log_probs + math.log1p(-epsilon), floor)


def kl_divergence(teacher_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """``KL(p || q)`` per map, ``[..., N] -> [...]``; p = exp(teacher) (0 log 0 = 0 via xlogy), q the student."""
    p = teacher_log_probs.exp()
    return (torch.xlogy(p, p) - p * student_log_probs).sum(-1)


def bhattacharyya(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``sum_n sqrt(p_n q_n)`` per map in [0, 1], ``[..., N] -> [...]``, via logsumexp (no underflow to 0/0)."""
    return torch.logsumexp(0.5 * (log_p + log_q), dim=-1).exp()


def cross_entropy(target_probs: Tensor, log_probs: Tensor) -> Tensor:
    """``-sum_n p_n log q_n`` per map, ``[..., N] -> [...]``."""
    return -(target_probs * log_probs).sum(-1)


def teacher_gate(label_probs: Tensor, teacher_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """Detached 0/1 gate ``[...]``: 1 where the teacher explains the label better (lower CE) than the student.

    Pass floored log-probabilities on both sides so the comparison is finite and fair.
    """
    with torch.no_grad():
        return (cross_entropy(label_probs, teacher_log_probs) < cross_entropy(label_probs, student_log_probs)).float()


def argmax_location(maps: Tensor) -> Tensor:
    """``[B, K, h, w]`` -> ``[B, K, 2]`` float (x, y) of each map's maximum."""
    width = maps.shape[-1]
    index = maps.flatten(2).argmax(-1)
    return torch.stack([(index % width).float(), torch.div(index, width, rounding_mode="floor").float()], dim=-1)


def location_error(maps: Tensor, label_peaks: Tensor) -> Tensor:
    """Distance in heatmap pixels from each map's maximum to the label's, ``[B, K]``."""
    return (argmax_location(maps) - label_peaks).norm(dim=-1)


def accuracy_gate(teacher_error: Tensor, student_error: Tensor, margin: float = 1.0) -> Tensor:
    """Detached 0/1 gate: 1 where the teacher puts the joint at least ``margin`` pixels closer to the label."""
    return (teacher_error + margin < student_error).float().detach()


def feature_cosine(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine similarity ``[B]`` of two feature maps ``[B, C, h, w]``, each flattened per sample."""
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def fami_divergence(teacher_logits: Tensor, student_logits: Tensor, temperature: float,
                    detach_teacher: bool = True) -> Tensor:
    """FAMI-Pose's estimator: ``mean over [B, K, N] of (q log q - q p)``, p = softmax(sg teacher/T),
    q = softmax(student/T).

    This is what ``kl_div(input=p, target=q, reduction='mean')`` evaluates when given probabilities as ``input``.
    Maps are ``[B, K, h, w]`` (K = C feature channels or J heatmaps); channel k of teacher pairs with channel k of
    the student. ``detach_teacher=False`` lets gradients reach the teacher too (the lineage's ff(Mu, Mn)).

    ``q log q`` is computed as ``q * log_softmax``: the same value, but a finite gradient where a softmax at T = 0.05
    underflows to 0 (kl_div's own backward, and ``xlogy``'s, give 0 * -inf = NaN there, which a trained model's
    features reach within a few steps).
    """
    teacher_logits = teacher_logits.detach() if detach_teacher else teacher_logits
    p = spatial_log_softmax(teacher_logits, temperature).exp()
    log_q = spatial_log_softmax(student_logits, temperature)
    q = log_q.exp()
    return (q * log_q - q * p).mean()


# ----------------------------------------------------------------------------------------------------------------


class MIObjective(nn.Module):
    """The MI part of the TDMI loss; ``forward`` returns the four terms, ``aux`` and ``total`` (see module doc).

    Args:
        channels: C, the width of M, Mu, Mn (the motion head's input).
        num_joints: J, heatmap channels.
        alpha: weight of L_MI (paper: 1).
        formulation: ``"balanced"`` (default: VSD with its measured defects corrected), ``"vsd"`` (bounded),
            ``"fami"`` (literal FAMI-Pose estimators) or ``"lineage"`` (the authors' later code's terms).
        temperature: T of the spatial softmaxes (FAMI's 0.05).
        epsilon: floor mixed into student distributions (``vsd``, ``balanced``); every KL is <= log(N / epsilon).
        gate_distillation: gate terms 3 and 4 to joints where the teacher beats H (``vsd`` only; ``balanced``
            always gates, by localisation accuracy).
        motion_head_kernel: kernel of the auxiliary motion head h_m (1 or 3; odd).
        label_probe: ``lineage`` only: the frozen conv that maps a C-channel feature to J heatmaps (the model's
            backbone ``final_layer``). It is not a submodule (its weights belong to the model, not to this
            objective's state); without it, or where its input width is not C, h_m probes Mu.
    """

    def __init__(self, channels: int, num_joints: int, alpha: float = 1.0, formulation: str = "balanced",
                 temperature: float = 0.05, epsilon: float = 1e-4, gate_distillation: bool = True,
                 motion_head_kernel: int = 1, label_probe: nn.Conv2d | None = None):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
        if motion_head_kernel < 1 or motion_head_kernel % 2 == 0:
            raise ValueError(f"motion_head_kernel must be odd and >= 1, got {motion_head_kernel}")
        self.alpha = float(alpha)
        self.formulation = formulation
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.gate_distillation = bool(gate_distillation)
        self.motion_head = nn.Conv2d(channels, num_joints, motion_head_kernel, padding=motion_head_kernel // 2)
        # HRNet/FAMI init for new convs (docs/facts/model-facts.md (a)): small weights, so h_m starts near-uniform
        nn.init.normal_(self.motion_head.weight, std=0.001)
        nn.init.zeros_(self.motion_head.bias)
        self.heatmap_loss = JointsMSELoss(factor=1.0)
        # a plain tuple, so the probe's weights are neither registered here nor saved with this objective
        usable = label_probe is not None and label_probe.in_channels == channels
        self._label_probe: tuple[nn.Conv2d, ...] = (label_probe,) if usable else ()

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, label_probe: nn.Conv2d | None = None) -> MIObjective:
        """Build from ``ExperimentConfig.model`` (uses ``tde.channels``, ``num_joints`` and ``mi.*``); ``label_probe``:
        the model's frozen ``backbone.final_layer`` (read by the ``lineage`` formulation only)."""
        mi = model_cfg.mi
        return cls(channels=model_cfg.tde.channels, num_joints=model_cfg.num_joints, alpha=mi.alpha,
                   formulation=mi.formulation, temperature=mi.temperature, epsilon=mi.epsilon,
                   gate_distillation=mi.gate_distillation, motion_head_kernel=mi.motion_head_kernel,
                   label_probe=label_probe)

    def probe_logits(self, features: Tensor) -> Tensor:
        """Detached float32 heatmaps ``[B, J, h, w]`` of a ``[B, C, h, w]`` feature by the label probe (the frozen
        HRNet head; h_m where there is none of width C): the lineage's fl(X, H) teacher."""
        with torch.no_grad(), autocast_off(features.device.type):
            if not self._label_probe:
                return self.motion_logits(features)
            probe = self._label_probe[0]
            bias = probe.bias.float() if probe.bias is not None else None
            return F.conv2d(features.float(), probe.weight.float(), bias, padding=probe.padding)

    def motion_logits(self, features: Tensor) -> Tensor:
        """h_m with detached weights, float32: ``[B, C, h, w] -> [B, J, h, w]``; gradients reach only ``features``."""
        head = self.motion_head
        return F.conv2d(features.float(), head.weight.detach().float(), head.bias.detach().float(),
                        padding=head.padding)

    def forward(self, output: MIInputs, target_heatmaps: Tensor, target_weight: Tensor) -> dict[str, Tensor]:
        """Compute the MI terms.

        Args:
            output: model output with the attributes of :class:`MIInputs`.
            target_heatmaps: G, ``[B, J, h, w]``.
            target_weight: ``[B, J]`` (or ``[B, J, 1]``), joint visibility weights.

        Returns:
            float32 scalars: the four terms (keys ``TERM_NAMES``), ``aux`` (the motion head's L_aux) and ``total``
            (the quantity to add to L_H).
        """
        heatmaps, motion = output.heatmaps, output.motion
        B, J, h, w = heatmaps.shape
        if target_heatmaps.shape != heatmaps.shape:
            raise ValueError(f"target heatmaps {tuple(target_heatmaps.shape)} != heatmaps {tuple(heatmaps.shape)}")
        for name in ("motion", "useful", "noisy"):
            feature = getattr(output, name)
            if feature is not None and (feature.shape[0] != B or feature.shape[1] != self.motion_head.in_channels
                                        or feature.shape[-2:] != (h, w)):
                raise ValueError(f"output.{name} has shape {tuple(feature.shape)}; the MI objective needs "
                                 f"[{B}, {self.motion_head.in_channels}, {h}, {w}] (C channels at heatmap size)")
        weight = target_weight.reshape(B, J).float().detach()

        useful = output.useful if output.useful is not None else motion
        aux = (self.heatmap_loss(self.motion_head(motion.detach().to(self.motion_head.weight.dtype)),
                                 target_heatmaps, weight))
        if output.useful is not None:
            aux = aux + self.heatmap_loss(self.motion_head(useful.detach().to(self.motion_head.weight.dtype)),
                                          target_heatmaps, weight)

        if self.formulation == "vsd":
            terms = self._vsd_terms(output, useful, target_heatmaps, weight)
            weighted = [t / (h * w) for t in terms]
        elif self.formulation == "balanced":
            terms = self._balanced_terms(output, useful, target_heatmaps, weight)
            weighted = [terms[0] / (h * w)] + [self.temperature * t / (h * w) for t in terms[1:]]
        elif self.formulation == "lineage":
            with autocast_off(heatmaps.device.type):
                terms = self._lineage_terms(output, useful)
            weighted = terms
        else:
            terms = self._fami_terms(output, useful)
            weighted = terms
        result = dict(zip(TERM_NAMES, terms))
        result["aux"] = aux
        result["total"] = self.alpha * sum(weighted) + aux
        return result

    def weighted_terms(self, terms: dict[str, Tensor], num_pixels: int) -> dict[str, Tensor]:
        """Each MI term as it enters ``total`` (alpha, 1/N and, for ``balanced``, T applied): for gradient logs."""
        scale = {name: 1.0 / num_pixels for name in TERM_NAMES} if self.formulation not in ("fami", "lineage") \
            else {name: 1.0 for name in TERM_NAMES}
        if self.formulation == "balanced":
            scale.update({name: self.temperature / num_pixels for name in TERM_NAMES[1:]})
        return {name: self.alpha * scale[name] * terms[name] for name in TERM_NAMES}

    def _balanced_terms(self, output: MIInputs, useful: Tensor, target_heatmaps: Tensor,
                        weight: Tensor) -> list[Tensor]:
        T, eps = self.temperature, self.epsilon
        zero = output.heatmaps.new_zeros((), dtype=torch.float32)
        useful_logits = self.motion_logits(useful)
        useful_log_probs = spatial_log_softmax(useful_logits, T)
        heatmap_student = floor_log_probs(spatial_log_softmax(output.heatmaps, T), eps)
        visual_teacher = spatial_log_softmax(output.static_heatmaps.detach(), T)
        label_peaks = argmax_location(target_heatmaps.detach())
        heatmap_error = location_error(output.heatmaps.detach(), label_peaks)

        if output.noisy is not None and output.useful is not None:
            useful_noisy = feature_cosine(output.useful.float(), output.noisy.float()).mean()
        else:
            useful_noisy = zero

        if output.useful is not None:
            with torch.no_grad():
                motion_logits = self.motion_logits(output.motion)
                motion_teacher = spatial_log_softmax(motion_logits, T)
                motion_gate = accuracy_gate(location_error(motion_logits, label_peaks),
                                            location_error(useful_logits.detach(), label_peaks))
            motion_useful = (weight * motion_gate
                             * kl_divergence(motion_teacher, floor_log_probs(useful_log_probs, eps))).mean()
        else:
            motion_useful = zero

        useful_gate = accuracy_gate(location_error(useful_logits.detach(), label_peaks), heatmap_error)
        visual_gate = accuracy_gate(location_error(output.static_heatmaps.detach(), label_peaks), heatmap_error)
        useful_label = (weight * useful_gate * kl_divergence(useful_log_probs.detach(), heatmap_student)).mean()
        visual_label = (weight * visual_gate * kl_divergence(visual_teacher, heatmap_student)).mean()
        return [useful_noisy, motion_useful, useful_label, visual_label]

    def _vsd_terms(self, output: MIInputs, useful: Tensor, target_heatmaps: Tensor,
                   weight: Tensor) -> list[Tensor]:
        T, eps = self.temperature, self.epsilon
        zero = output.heatmaps.new_zeros((), dtype=torch.float32)
        useful_log_probs = spatial_log_softmax(self.motion_logits(useful), T)  # [B, J, N], grads -> Mu
        heatmap_student = floor_log_probs(spatial_log_softmax(output.heatmaps, T), eps)
        useful_teacher = useful_log_probs.detach()
        visual_teacher = spatial_log_softmax(output.static_heatmaps.detach(), T)

        if output.noisy is not None and output.useful is not None:
            noisy_log_probs = spatial_log_softmax(self.motion_logits(output.noisy), T)
            useful_noisy = bhattacharyya(useful_log_probs, noisy_log_probs).mean()
        else:
            useful_noisy = zero

        if output.useful is not None:
            with torch.no_grad():
                motion_teacher = spatial_log_softmax(self.motion_logits(output.motion), T)
            motion_useful = (weight * kl_divergence(motion_teacher, floor_log_probs(useful_log_probs, eps))).mean()
        else:
            motion_useful = zero

        useful_gate = visual_gate = torch.ones_like(weight)
        if self.gate_distillation:
            label_probs = spatial_log_softmax(target_heatmaps.detach(), T).exp()
            student = heatmap_student.detach()
            useful_gate = teacher_gate(label_probs, floor_log_probs(useful_teacher, eps), student)
            visual_gate = teacher_gate(label_probs, floor_log_probs(visual_teacher, eps), student)
        useful_label = (weight * useful_gate * kl_divergence(useful_teacher, heatmap_student)).mean()
        visual_label = (weight * visual_gate * kl_divergence(visual_teacher, heatmap_student)).mean()
        return [useful_noisy, motion_useful, useful_label, visual_label]

    def _lineage_terms(self, output: MIInputs, useful: Tensor) -> list[Tensor]:
        """The four terms with the lineage's weights and signs (module doc); each is float32 and already carries
        its weight, so they sum to L_MI."""
        T = self.temperature
        zero = output.heatmaps.new_zeros((), dtype=torch.float32)
        has_useful = output.useful is not None
        useful_noisy = (LINEAGE_OVERLAP_WEIGHT * fami_divergence(useful, output.noisy, T, detach_teacher=False)
                        if output.noisy is not None and has_useful else zero)
        motion_useful = -fami_divergence(output.motion, useful, T) if has_useful else zero
        fused = output.fused.float()
        useful_label = (fami_divergence(self.probe_logits(useful), output.heatmaps, T)
                        - fami_divergence(useful, fused[:, :useful.shape[1]], T))
        visual = output.visual
        paired = min(visual.shape[1], fused.shape[1])
        visual_label = (fami_divergence(output.static_heatmaps, output.heatmaps, T)
                        - fami_divergence(visual[:, :paired], fused[:, :paired], T))
        return [useful_noisy, motion_useful, useful_label, visual_label]

    def _fami_terms(self, output: MIInputs, useful: Tensor) -> list[Tensor]:
        T = self.temperature
        zero = output.heatmaps.new_zeros((), dtype=torch.float32)
        has_useful = output.useful is not None
        useful_noisy = (fami_divergence(useful, output.noisy, T)
                        if output.noisy is not None and has_useful else zero)
        motion_useful = -fami_divergence(output.motion, useful, T) if has_useful else zero
        useful_label = (fami_divergence(self.motion_logits(useful), output.heatmaps, T)
                        - fami_divergence(useful, output.fused, T))
        if output.visual.shape[1] != output.fused.shape[1]:
            # FAMI pairs feature channels one to one, which needs the backbone width to equal the TDE width.
            raise ValueError(f"model.mi.formulation=fami compares the key-frame feature ({output.visual.shape[1]} "
                             f"channels = backbone width) with F~ ({output.fused.shape[1]} channels = "
                             "model.tde.channels) channel by channel; set model.tde.channels to the backbone width "
                             "or use formulation=vsd")
        visual_label = (fami_divergence(output.static_heatmaps, output.heatmaps, T)
                        - fami_divergence(output.visual, output.fused, T))
        return [useful_noisy, motion_useful, useful_label, visual_label]
