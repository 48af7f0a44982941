"""The paper's eight tasks and the one place their prompts are written.

Every model input is "USER: {content}\nASSISTANT: {answer}" (the paper's template), where the
content holds the task's speech span(s) between `<audio>` and `</audio>` and its instruction. The
USTokenizer recipe (speech = adapter embeddings) and the DualSpeechLM processor (speech = USToken
ids) build their sequences from the same `prompt_parts`, so training and inference cannot drift.
It lives beside the models (importing nothing of the package) so a saved model folder's processor can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Formatter

AUDIO_START, AUDIO_END = "<audio>", "</audio>"
USER, ASSISTANT = "USER: ", "\nASSISTANT:"


@dataclass(frozen=True)
class Task:
    """One task, and where its examples live in the corpus (`processing/corpus`).

    `instruction` may hold `{placeholders}` filled from the example (e.g. `{question}`); `corpus_config`: the corpus
    config whose rows hold its examples; `answer_column`: the column of the answer's words (the text answer of an
    understanding task, the words a generation task speaks); `input_audio`: the audio columns whose USTokens make the
    prompt's speech span, in order (none: a text prompt); `answer_audio`: the column of the spoken answer (generation
    tasks; None: a text answer) and `answer_speaker` the column naming its voice; `eval_limit`: the examples of each
    test split the evaluation scores by default."""

    name: str
    instruction: str
    corpus_config: str
    answer_column: str
    input_audio: tuple[str, ...] = ()
    answer_audio: str | None = None
    answer_speaker: str = "speaker"
    eval_limit: int = 20

    @property
    def speech_input(self) -> bool:
        """The prompt carries a speech span."""
        return bool(self.input_audio)

    @property
    def speech_output(self) -> bool:
        """The answer is speech."""
        return self.answer_audio is not None

    @property
    def prompt_fields(self) -> tuple[str, ...]:
        """The example fields the instruction reads, e.g. ("language", "text")."""
        return tuple(name for _, name, _, _ in Formatter().parse(self.instruction) if name)


TASKS = {
    task.name: task
    for task in (
        Task("asr", "Transcribe the speech.", "speech", "text", input_audio=("audio",), eval_limit=100),
        Task("s2tt", "Translate the speech into {language}.", "translation", "translation", input_audio=("audio",),
             eval_limit=100),
        Task("ser", "Describe the speaking style.", "style", "style", input_audio=("audio",), eval_limit=120),
        Task("sqa", "Answer the question about the speech: {question}", "qa", "answer", input_audio=("audio",),
             eval_limit=60),
        Task("tts", "Speak this text: {text}", "speech", "text", answer_audio="audio", eval_limit=60),
        Task("vc", "Say the same words in the target voice.", "vc", "text", input_audio=("audio",),
             answer_audio="target_audio", answer_speaker="target_speaker"),
        Task("t2st", "Speak the translation of this text into {language}: {text}", "translation", "translation",
             answer_audio="translation_audio", answer_speaker="translation_speaker"),
        # the passage, then the spoken question, answered in speech
        Task("sc", "Answer the spoken question in speech.", "qa", "answer", input_audio=("audio", "question_audio"),
             answer_audio="answer_audio"),
    )
}
UNDERSTANDING_TASKS = tuple(name for name, task in TASKS.items() if not task.speech_output)
GENERATION_TASKS = tuple(name for name, task in TASKS.items() if task.speech_output)
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French"}


def answer_text(answer: str) -> str:
    """The answer as it follows the prompt: after one space, so a BPE tokenizer sees the same
    " word" tokens whether prompt and answer are tokenized together or apart."""
    return " " + answer.strip()


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def prompt_parts(task: str, **fields: str) -> tuple[str, str]:
    """The text before and after the speech span of `task`'s prompt, `fields` filling the
    instruction. For a task without speech input the first part is the whole prompt and the
    second is empty; `answer_text(answer)` follows the second part.

    >>> prompt_parts("asr")
    ('USER: <audio>', '</audio> Transcribe the speech.\\nASSISTANT:')
    """
    spec = get_task(task)
    if "language" in fields:
        fields["language"] = LANGUAGE_NAMES.get(fields["language"], fields["language"])
    try:
        instruction = spec.instruction.format(**fields)
    except KeyError as missing:
        raise ValueError(f"task {task!r} needs the field {missing.args[0]!r} for its prompt") from None
    if not spec.speech_input:
        return USER + instruction + ASSISTANT, ""
    return USER + AUDIO_START, AUDIO_END + " " + instruction + ASSISTANT


__all__ = ["TASKS", "Task", "answer_text", "build_inputs", "UNDERSTANDING_TASKS", "GENERATION_TASKS", "get_task",
           "prompt_parts", "AUDIO_START", "AUDIO_END"]


def build_inputs(tokenizer, config, examples: list[dict], with_answers: bool, padding_side: str = "right") -> dict:
    """Token sequences of a batch of task examples, for training (`with_answers`) or generation.

    Each example: `task`, the fields its prompt needs (`text`, `question`, `language`), `speech_ids`
    (USToken ids 0..K-1 of the input speech, for tasks with speech input) and, with answers,
    `answer` (text) or `answer_speech_ids` (USTokens, generation tasks). `config` is a
    DualSpeechLMConfig (speech token ids). A sequence is
        prompt  = BOS + before + <a_k>... (the speech span) + after         (`prompt_parts`)
        answer  = answer_text(answer) + EOS,  or  <audio> <a_k>... </audio> + EOS
    Returns `input_ids`, `attention_mask` and `condition_mask` (the prompt: what AcousticGPT is
    conditioned on) `[batch, longest]`, with answers `labels` (answer + EOS, -100 elsewhere), and `tasks`.
    Generation prompts are left-padded (`padding_side="left"`) and end where the answer starts.
    """
    import torch

    if not examples:
        raise ValueError("no examples")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    items = []
    for example in examples:
        task = get_task(example["task"])
        fields = {k: example[k] for k in ("text", "question", "language") if k in example}
        if "text" in fields and not str(fields["text"]).strip():
            raise ValueError(f"task {task.name!r} got an empty text")
        items.append((example, task, fields))
    rows = []
    for example, task, fields in items:
        before, after = prompt_parts(task.name, **fields)
        prompt = [tokenizer.bos_token_id] + tokenizer(before, add_special_tokens=False).input_ids
        if task.speech_input:
            speech = example.get("speech_ids")
            if speech is None or len(speech) == 0:
                raise ValueError(f"task {task.name!r} needs the USTokens of its input speech (speech_ids)")
            prompt += [config.speech_token_offset + int(i) for i in speech]
            prompt += tokenizer(after, add_special_tokens=False).input_ids
        answer = []
        if with_answers:
            if task.speech_output:
                answer = ([config.audio_start_token_id]
                          + [config.speech_token_offset + int(i) for i in example["answer_speech_ids"]]
                          + [config.audio_end_token_id])
            else:
                answer = tokenizer(answer_text(example["answer"]), add_special_tokens=False).input_ids
            answer.append(tokenizer.eos_token_id)
        rows.append((prompt, answer))
    width = max(len(p) + len(a) for p, a in rows)
    names = ("input_ids", "attention_mask", "condition_mask")
    batch = {name: torch.zeros(len(rows), width, dtype=torch.long) for name in names}
    batch["input_ids"].fill_(tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for row, (prompt, answer) in enumerate(rows):
        length = len(prompt) + len(answer)
        start = width - length if padding_side == "left" else 0
        batch["input_ids"][row, start : start + length] = torch.tensor(prompt + answer)
        batch["attention_mask"][row, start : start + length] = 1
        batch["condition_mask"][row, start : start + len(prompt)] = 1
        labels[row, start + len(prompt) : start + length] = torch.tensor(answer, dtype=torch.long)
    if with_answers:
        batch["labels"] = labels
    batch["tasks"] = [example["task"] for example in examples]
    return batch
