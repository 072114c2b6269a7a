"""Is an augmentation a good pretext for this label? Label damage, encoder invariance and its consequence.

A contrastive encoder is trained to be invariant to its augmentations: ``f(x) ~ f(T(x))``.
That is only harmless when ``T`` keeps what defines the label (rotating an
orientation-labelled texture turns class 0 deg into 90 deg; grayscale erases the
colour of colour-labelled shapes). For each single augmentation of the taxonomy
(:data:`ssl_viz.augment.SINGLE_TRANSFORMS`) this module measures:

1. **Label damage, in the data** (no encoder involved): a cheap probe, a ridge
   classifier on a fixed feature bank (:class:`FeatureProbe`), is trained on clean
   images and evaluated on transformed test images (``probe_transformed``). A drop can
   mean "T changes the label" or merely "T makes images the probe never saw", so a
   second probe with the same features is trained on clean + transformed training
   images (``probe_adapted``): if even it cannot read the label from ``T(x)``, the
   label-relevant information is gone. Each drop is normalised by the clean accuracy
   above chance, and the label damage is the smaller of the two::

       damage = min(drop_clean, drop_adapted),  drop = (acc_clean - acc_T) / (acc_clean - chance)

2. **Invariance of the encoder**: ``s_aug = E cos(f(x), f(T(x)))`` against random pairs
   ``s_rand = E cos(f(x), f(x'))``, reported as ``(s_aug - s_rand) / (1 - s_rand)``
   (1: f ignores T; 0: T moves f(x) as far as a random other image).
3. **Consequence**: kNN / linear accuracy of the encoder on the clean test set, and an
   optional ablation sweep (short training runs with each augmentation added or
   removed: :func:`ablation_configs` here; :func:`ssl_viz.sweeps.launch_ablation` and
   :func:`ssl_viz.sweeps.run_ablation` train them, as analysis never trains).

The verdict per augmentation is driven by label damage (``harmful`` / ``neutral`` /
``suitable``; ``neutral`` also when T hardly changes the images); the invariance is
context. Everything returns data or plotly figures and never calls Streamlit.

4. **Dose-response** (:func:`dose_response`): the same measurements at several strengths
   (:data:`STRENGTHS`, gentle to strength 1; the probability for flip, grayscale and rotate90),
   "safe up to X, harmful from Y" per augmentation, and a recommended policy
   (:func:`recommend_policy`: each augmentation at its strongest safe setting, after Tian et al.
   2020, "What Makes for Good Views for Contrastive Learning?"); :func:`example_strip` shows a
   few images per class before and after. Short training runs that check the recommendation
   against the default recipes are :func:`ssl_viz.sweeps.run_verification` / ``launch_verification``.

Modules: :mod:`.features` (the probe's fixed features), :mod:`.probe` (:class:`FeatureProbe`),
:mod:`.report` (:class:`Diagnosis`, verdict rules), :mod:`.core` (:class:`ProbeBench`, :func:`diagnose`),
:mod:`.dose` (:func:`dose_response`, :class:`DoseResponse`), :mod:`.recommend` (:func:`recommend_policy`),
:mod:`.strip` (:func:`example_strip`), :mod:`.figure` (:func:`diagnosis_figure`, :func:`dose_figure`),
:mod:`.ablation` (the sweep's policies and configs).
"""


from ssl_viz.analysis.diagnosis.ablation import ablation_configs, ablation_policy, attach_ablation
from ssl_viz.analysis.diagnosis.core import ProbeBench, Progress, check_sample, diagnose, knn_top1
from ssl_viz.analysis.diagnosis.dose import DEFAULT_N_TEST, DEFAULT_N_TRAIN, STRENGTHS, DoseCurve, DoseResponse, curve_from_reports, dose_response, dose_setting
from ssl_viz.analysis.diagnosis.features import PROBE_GROUPS, content_mask, gabor_bank, probe_features
from ssl_viz.analysis.diagnosis.figure import diagnosis_figure, dose_figure
from ssl_viz.analysis.diagnosis.probe import FeatureProbe
from ssl_viz.analysis.diagnosis.recommend import (
    MIN_BLUR_SIZE,
    RECOMMENDED_P,
    SMALL_IMAGE_CROP_FLOOR,
    SMALL_IMAGE_SIZE,
    VIEW_AUGMENTATIONS,
    is_safe,
    recommend_policy,
)
from ssl_viz.analysis.diagnosis.report import (
    VERDICT_COLORS,
    VERDICTS,
    AugmentationReport,
    Diagnosis,
    Thresholds,
    invariance_score,
    jsonable,
    judge,
    normalised_drop,
    report_stem,
)
from ssl_viz.analysis.diagnosis.strip import example_indices, example_strip

__all__ = [
    "DEFAULT_N_TEST", "DEFAULT_N_TRAIN", "MIN_BLUR_SIZE", "PROBE_GROUPS", "RECOMMENDED_P", "SMALL_IMAGE_CROP_FLOOR", "SMALL_IMAGE_SIZE",
    "STRENGTHS", "VERDICTS",
    "VERDICT_COLORS", "VIEW_AUGMENTATIONS",
    "AugmentationReport", "Diagnosis", "DoseCurve", "DoseResponse", "FeatureProbe", "ProbeBench", "Progress", "Thresholds",
    "ablation_configs", "ablation_policy", "attach_ablation", "check_sample", "content_mask", "curve_from_reports", "diagnose",
    "diagnosis_figure", "dose_figure", "dose_response", "dose_setting", "example_indices", "example_strip", "gabor_bank",
    "invariance_score", "is_safe", "jsonable", "judge", "knn_top1", "normalised_drop", "probe_features", "recommend_policy",
    "report_stem",
]
