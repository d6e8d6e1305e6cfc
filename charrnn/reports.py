"""The reports that cross from ``train``, ``inspect`` and ``activations`` to their renderers.

Each report is a plain dict at run time, described here as a ``TypedDict``: the contract
between the module that builds it and ``charrnn.views`` (terminal) or
``charrnn.html_page``. ``--json`` prints the same dicts with ``json.dumps``, so these
classes also describe that output. Nothing heavy is imported here.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

# ----------------------------------------------------------------------------- train


class TrainStart(TypedDict):
    """Made by ``train.Run.describe``; read by ``views.render_train_start``."""
    text: str                 # the training file, or "N files under FOLDER"
    files: int
    chars: int
    vocab_size: int
    train_chars: int
    val_chars: int
    val_scored: int           # validation characters one evaluation scores, all processes
    model: str                # ``ModelConfig.describe()``: "2x256 lstm, embedding 64"
    parameters: int
    device: str
    dtype: str                # with " (auto)" when --dtype auto chose it
    threads: str              # the thread count and how it was found
    size: str | None          # why --size auto chose its shape; None without it
    batching: str
    batch_size: int
    seq_length: int
    budget: str
    run_dir: str
    resumed_at: int           # the step a resume starts from (0 for a new run)
    processes: int            # torchrun's world size (1 alone)
    val_only_chars: str       # characters of the validation file the training text lacks
    val_empty: list[str]      # empty files of a --val-file folder or pattern, left out


class SizeChoice(TypedDict):
    """Made by ``sizing.Sizing.to_dict`` under --size auto; part of ``TrainEnd``."""
    chosen: str               # "LAYERSxWIDTH"
    steps: int                # the steps the budget was predicted to allow
    passes: float             # over the training text
    chars_per_param: float
    seconds: float            # of training the prediction counted on
    timed: dict[str, float]   # each candidate shape -> seconds per step


class TrainEnd(TypedDict):
    """Made by ``train.RunResult.to_dict``; read by ``views.render_train_end``."""
    # A number that is not finite is None (JSON has no NaN).
    run_dir: str
    step: int
    elapsed_s: float | None
    first_step_s: float | None   # None when this call trained no step
    val_loss: float | None
    val_bpc: float | None
    best_val_loss: float | None
    best_val_bpc: float | None
    chars_per_s: float | None
    stopped_early: bool          # by --patience
    best_step: int | None
    dtype: str
    threads: int                 # 0: not known
    size: SizeChoice | None
    best: str                    # the paths of best.pt and last.pt
    last: str
    numbered: list[str]          # the step-N.pt files kept


# ----------------------------------------------------------------------------- inspect


class InspectModel(TypedDict):
    """Made by ``inspect.describe`` (config and layout); read by ``views``' title line."""
    cell: str
    nonlinearity: str
    embedding_dim: int
    hidden_size: int
    num_layers: int
    dropout: float
    proj_size: int
    tie_weights: bool
    bidirectional: bool
    vocab_size: int
    batch_first: bool


class Dims(TypedDict):
    """Made by ``inspect._sizes``, the letters used in shapes; read by ``views``."""
    N: int                    # batch_size
    L: int                    # seq_length
    H_in: int                 # the first layer's input size (embedding_dim)
    H_cell: int               # hidden_size (an LSTM's c too)
    H_out: int                # h's size: proj_size, else hidden_size
    D: int                    # directions: 2 when bidirectional
    num_layers: int
    V: int                    # vocab_size


class GateRows(TypedDict):
    """Made by ``inspect._gate_slices``: a gate's rows of a packed parameter (``--json``)."""
    gate: str                 # the letter: i, f, g, o (LSTM) or r, z, n (GRU)
    meaning: str
    rows: list[int]           # [start, stop)


class ParameterRow(TypedDict):
    """Made by ``inspect._describe_parameter``; a row of ``views``' parameter table."""
    name: str
    shape: list[int]
    numel: int
    role: str                 # what it multiplies, in the cell's notation
    init: str                 # PyTorch's default initialisation, in words
    init_bound: float | None  # the U(-k, k) bound; None for a normal or unknown init
    gates: list[GateRows]     # empty for a parameter that packs no gates


class EquationSection(TypedDict):
    """Made by ``inspect.equations``; drawn by ``views.render_inspect(equations=True)``."""
    title: str
    lines: list[list[str]]    # [equation, comment] pairs


class Flops(TypedDict):
    """Made by ``inspect._costs`` (per character); read by ``views``' cost table."""
    forward: int
    training: int
    per_part: dict[str, int]  # "embedding", "rnn layer K", "head" -> forward FLOPs


class Memory(TypedDict):
    """Made by ``inspect._costs`` (bytes); read by ``views``' memory line."""
    weights: int
    gradients: int
    optimizer_state: int      # measured by one step of the training optimiser
    optimizer: str
    dtype: str                # of the weights, e.g. "float32"


class Costs(TypedDict):
    """Made by ``inspect._costs``; read by ``views``' cost table and memory line."""
    flops_per_char: Flops
    memory_bytes: Memory


class CorpusRecord(TypedDict, total=False):
    """Made by ``inspect.describe_checkpoint`` from the file's record; read by ``views``."""
    # The keys ``corpus.Texts.record`` writes; a value of another type is left out.
    path: str                 # one file: its absolute path
    paths: list[str]          # several files: their absolute paths
    chars: int
    sha256: str               # of the text (for several, of their hashes together)
    sha256s: list[str]        # several files: each one's


class CheckpointVocab(TypedDict):
    """Made by ``inspect.describe_checkpoint``; read by ``views``' vocabulary lines."""
    size: int
    chars: list[str]          # escaped for display (``data.escape_char``), in id order
    counts: NotRequired[list[int]]   # occurrences in the corpus, in id order (--corpus)


class CheckpointInfo(TypedDict):
    """Made by ``inspect.describe_checkpoint``; read by ``views.render_checkpoint``."""
    # A value missing from the file, or of a type charrnn never writes, is None (or empty).
    format_version: int | None
    charrnn_version: str | None
    torch_version: str | None
    vocab: CheckpointVocab | None
    model_config: dict[str, Any]      # the settings as saved
    train_config: dict[str, Any]
    step: int | None
    elapsed: float | None             # seconds
    best_val_loss: float | None       # nats per character
    val_loss: float | None
    num_parameters: int | None
    metrics: list[dict[str, float]]   # the metrics history's rows, numbers only
    corpus: CorpusRecord
    best_val_bpc: float | None        # bits per character
    val_bpc: float | None
    path: NotRequired[str]            # added by ``inspect.describe_trained``


class InspectReport(TypedDict):
    """Made by ``inspect.describe`` / ``describe_trained``; read by ``views.render_inspect``."""
    model: InspectModel
    dims: Dims
    parameters: list[ParameterRow]
    num_parameters: int
    num_parameters_per_layer: dict[str, int]   # "embedding", "rnn layer K", "head"
    equations: list[EquationSection]
    costs: Costs
    tensors: dict[str, list[int]]              # tensor -> its shape in one forward pass
    tensor_dims: dict[str, list[str]]          # tensor -> its dimensions in words
    notes: list[str]
    # With verify=True (``Verification``):
    verify: NotRequired[dict[str, float]]      # tensor -> max |torch - reference|
    verify_tolerance: NotRequired[float]
    verify_last_step: NotRequired[dict[str, bool]]  # direction -> output's last step = h_n
    verify_ok: NotRequired[bool]
    checkpoint: NotRequired[CheckpointInfo]    # from ``describe_trained`` only


class Verification(TypedDict):
    """Made by ``inspect._verify``; merged into ``InspectReport`` when verify=True."""
    verify: dict[str, float]
    verify_tolerance: float
    verify_last_step: dict[str, bool]
    verify_ok: bool


# ----------------------------------------------------------------------------- activations


class ActivationModel(TypedDict):
    """Made by ``activations.activation_report``; read by ``views.activation_heading``."""
    cell: str
    nonlinearity: str
    num_layers: int
    hidden_size: int
    proj_size: int
    vocab_size: int


class Signal(TypedDict):
    """Made by ``activations.activation_report`` (--signal); read by ``views``' headings."""
    name: str
    meaning: str
    values: list[float]       # its value after each character of the text


class NeuronRow(TypedDict):
    """Made by ``activations._neuron``; read by ``views`` and ``html_page``."""
    index: int
    r: float | None           # correlation with the signal; None without one
    mean: float
    std: float
    min: float
    max: float
    values: list[float]       # its activation after each character of the text


class PredictionRow(TypedDict):
    """Made by ``activations._predictions``; read by ``views`` and ``html_page``."""
    char: str                 # the character read
    next: str | None          # the one that follows; None at the end of the text
    p_next: float | None      # the probability the model gave ``next``
    top: list[list[Any]]      # the likeliest next characters: [character, probability]


class ActivationReport(TypedDict):
    """Made by ``activations.activation_report``; read by ``views`` and ``html_page``."""
    text: str                 # the text read, cut to ``activations.MAX_CHARS``
    source: str | None        # the file it came from; None for text given inline
    truncated_from: int | None   # the text's length before the cut; None when not cut
    model: ActivationModel
    layer: int
    state: str                # "h", or "c" for an LSTM's tanh(c_t)
    state_meaning: str
    width: int                # neurons in that layer's state
    ranked_by: str            # "index" (--neuron), "correlation" (--signal) or "std"
    signal: Signal | None
    neurons: list[NeuronRow]
    predictions: list[PredictionRow]   # one per character of the text
    bits_per_char: float | None        # on this text; None under 2 characters
    checkpoint: NotRequired[str]       # its path, added by ``inspect --activations``
