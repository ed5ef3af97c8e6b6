"""ROS-free per-frame trust: should a consumer believe the model's answer for this frame?

Three signals, combined into OK / WARN / ERROR with reasons (:mod:`.assessment`): cheap image
checks on the source frame (:mod:`.image_checks`, numpy/OpenCV), an out-of-distribution score
of the frozen backbone's pooled features against training statistics (:mod:`.ood`, numpy;
the features come from a hook on the running forward pass, :mod:`.feature_tap`, PyTorch), and
the calibrated confidence the caller passes in. Names are imported lazily, so the image checks
and the statistics never pull in PyTorch.
"""

from __future__ import annotations

from endoarss_ros.lazy_exports import lazy_exports

_EXPORTS = {
    "Level": "image_checks",
    "BlockState": "image_checks",
    "CheckResult": "image_checks",
    "ImageQuality": "image_checks",
    "ImageQualityChecker": "image_checks",
    "ImageQualityConfig": "image_checks",
    "check_image": "image_checks",
    "OutputCheckConfig": "output_checks",
    "instrument_class_ids": "output_checks",
    "instrument_fraction": "output_checks",
    "natural_images": "reference_images",
    "procedural_textures": "reference_images",
    "FeatureStatistics": "ood",
    "FeatureStatisticsError": "ood",
    "FeatureAccumulator": "ood",
    "FeatureTap": "feature_tap",
    "extract_features": "feature_tap",
    "fit_feature_statistics": "feature_tap",
    "TrustConfig": "assessment",
    "TrustAssessment": "assessment",
    "TrustEvaluator": "assessment",
    "Reason": "assessment",
    "LevelHysteresis": "assessment",
    "assess": "assessment",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
