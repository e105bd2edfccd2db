from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Normalizer(_message.Message):
    __slots__ = ("spec_version", "nfkc", "lowercase", "removed_categories", "whitespace", "max_chars")
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    NFKC_FIELD_NUMBER: _ClassVar[int]
    LOWERCASE_FIELD_NUMBER: _ClassVar[int]
    REMOVED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    WHITESPACE_FIELD_NUMBER: _ClassVar[int]
    MAX_CHARS_FIELD_NUMBER: _ClassVar[int]
    spec_version: int
    nfkc: bool
    lowercase: bool
    removed_categories: _containers.RepeatedScalarFieldContainer[str]
    whitespace: _containers.RepeatedScalarFieldContainer[int]
    max_chars: int
    def __init__(self, spec_version: _Optional[int] = ..., nfkc: _Optional[bool] = ..., lowercase: _Optional[bool] = ..., removed_categories: _Optional[_Iterable[str]] = ..., whitespace: _Optional[_Iterable[int]] = ..., max_chars: _Optional[int] = ...) -> None: ...

class Analyzer(_message.Message):
    __slots__ = ("min_n", "max_n", "word_boundary_padding", "word_max_n", "head_chars")
    MIN_N_FIELD_NUMBER: _ClassVar[int]
    MAX_N_FIELD_NUMBER: _ClassVar[int]
    WORD_BOUNDARY_PADDING_FIELD_NUMBER: _ClassVar[int]
    WORD_MAX_N_FIELD_NUMBER: _ClassVar[int]
    HEAD_CHARS_FIELD_NUMBER: _ClassVar[int]
    min_n: int
    max_n: int
    word_boundary_padding: bool
    word_max_n: int
    head_chars: int
    def __init__(self, min_n: _Optional[int] = ..., max_n: _Optional[int] = ..., word_boundary_padding: _Optional[bool] = ..., word_max_n: _Optional[int] = ..., head_chars: _Optional[int] = ...) -> None: ...

class Weighting(_message.Message):
    __slots__ = ("sublinear_tf", "use_idf", "norm")
    class Norm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NORM_NONE: _ClassVar[Weighting.Norm]
        NORM_L2: _ClassVar[Weighting.Norm]
    NORM_NONE: Weighting.Norm
    NORM_L2: Weighting.Norm
    SUBLINEAR_TF_FIELD_NUMBER: _ClassVar[int]
    USE_IDF_FIELD_NUMBER: _ClassVar[int]
    NORM_FIELD_NUMBER: _ClassVar[int]
    sublinear_tf: bool
    use_idf: bool
    norm: Weighting.Norm
    def __init__(self, sublinear_tf: _Optional[bool] = ..., use_idf: _Optional[bool] = ..., norm: _Optional[_Union[Weighting.Norm, str]] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("blueprint", "blueprint_sha256", "data_sha256", "trainer", "foundry_version", "train_rows", "exam_gate")
    BLUEPRINT_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_SHA256_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    FOUNDRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    EXAM_GATE_FIELD_NUMBER: _ClassVar[int]
    blueprint: str
    blueprint_sha256: str
    data_sha256: str
    trainer: str
    foundry_version: str
    train_rows: int
    exam_gate: str
    def __init__(self, blueprint: _Optional[str] = ..., blueprint_sha256: _Optional[str] = ..., data_sha256: _Optional[str] = ..., trainer: _Optional[str] = ..., foundry_version: _Optional[str] = ..., train_rows: _Optional[int] = ..., exam_gate: _Optional[str] = ...) -> None: ...

class Familiarity(_message.Message):
    __slots__ = ("min_order", "max_unfamiliar")
    MIN_ORDER_FIELD_NUMBER: _ClassVar[int]
    MAX_UNFAMILIAR_FIELD_NUMBER: _ClassVar[int]
    min_order: int
    max_unfamiliar: float
    def __init__(self, min_order: _Optional[int] = ..., max_unfamiliar: _Optional[float] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("name", "label", "contains", "starts_with", "ends_with", "equals", "also_contains", "unless_contains")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    STARTS_WITH_FIELD_NUMBER: _ClassVar[int]
    ENDS_WITH_FIELD_NUMBER: _ClassVar[int]
    EQUALS_FIELD_NUMBER: _ClassVar[int]
    ALSO_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    UNLESS_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    label: int
    contains: _containers.RepeatedScalarFieldContainer[str]
    starts_with: _containers.RepeatedScalarFieldContainer[str]
    ends_with: _containers.RepeatedScalarFieldContainer[str]
    equals: _containers.RepeatedScalarFieldContainer[str]
    also_contains: _containers.RepeatedScalarFieldContainer[str]
    unless_contains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., label: _Optional[int] = ..., contains: _Optional[_Iterable[str]] = ..., starts_with: _Optional[_Iterable[str]] = ..., ends_with: _Optional[_Iterable[str]] = ..., equals: _Optional[_Iterable[str]] = ..., also_contains: _Optional[_Iterable[str]] = ..., unless_contains: _Optional[_Iterable[str]] = ...) -> None: ...

class Preprocessor(_message.Message):
    __slots__ = ("format_version", "task", "labels", "normalizer", "analyzer", "weighting", "vocabulary", "idf", "threshold", "onnx_sha256", "unicode_version", "provenance", "content_sha256", "familiarity", "out_of_scope", "rules", "vocab_prefix", "vocab_suffix_len", "vocab_suffixes", "idf_table", "idf_index")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZER_FIELD_NUMBER: _ClassVar[int]
    ANALYZER_FIELD_NUMBER: _ClassVar[int]
    WEIGHTING_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    IDF_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ONNX_SHA256_FIELD_NUMBER: _ClassVar[int]
    UNICODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    FAMILIARITY_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SCOPE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    VOCAB_PREFIX_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SUFFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    IDF_TABLE_FIELD_NUMBER: _ClassVar[int]
    IDF_INDEX_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    task: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    normalizer: Normalizer
    analyzer: Analyzer
    weighting: Weighting
    vocabulary: _containers.RepeatedScalarFieldContainer[str]
    idf: _containers.RepeatedScalarFieldContainer[float]
    threshold: float
    onnx_sha256: str
    unicode_version: str
    provenance: Provenance
    content_sha256: bytes
    familiarity: Familiarity
    out_of_scope: str
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    vocab_prefix: _containers.RepeatedScalarFieldContainer[int]
    vocab_suffix_len: _containers.RepeatedScalarFieldContainer[int]
    vocab_suffixes: bytes
    idf_table: _containers.RepeatedScalarFieldContainer[float]
    idf_index: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, format_version: _Optional[int] = ..., task: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., normalizer: _Optional[_Union[Normalizer, _Mapping]] = ..., analyzer: _Optional[_Union[Analyzer, _Mapping]] = ..., weighting: _Optional[_Union[Weighting, _Mapping]] = ..., vocabulary: _Optional[_Iterable[str]] = ..., idf: _Optional[_Iterable[float]] = ..., threshold: _Optional[float] = ..., onnx_sha256: _Optional[str] = ..., unicode_version: _Optional[str] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., content_sha256: _Optional[bytes] = ..., familiarity: _Optional[_Union[Familiarity, _Mapping]] = ..., out_of_scope: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., vocab_prefix: _Optional[_Iterable[int]] = ..., vocab_suffix_len: _Optional[_Iterable[int]] = ..., vocab_suffixes: _Optional[bytes] = ..., idf_table: _Optional[_Iterable[float]] = ..., idf_index: _Optional[_Iterable[int]] = ...) -> None: ...
