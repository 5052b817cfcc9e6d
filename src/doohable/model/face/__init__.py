"""The face branch of the selfie scorer.

- ``embed``: dlib's detection, landmarks, aligned chips and descriptors (serving);
- ``branch``: the regressor on the descriptors and the blend/stack with the CNN (serving);
- ``fit``: choosing and fitting the branch (training, scikit-learn);
- ``train``: the fine-tuned face network and the stack (training, torch);
- ``dlibnet`` / ``dlibnet_torch``: dlib's face network read from its own weight file, as ONNX
  and as a torch module.

Serving imports neither scikit-learn nor torch.
"""

from doohable.model.face.branch import FaceBranch, FaceRegressor
from doohable.model.face.embed import DEFAULT_PADDINGS, FaceEmbedder

__all__ = ["DEFAULT_PADDINGS", "FaceBranch", "FaceEmbedder", "FaceRegressor"]
