"""The paper's eight tasks and the one place their prompts are written.

Every model input is "USER: {content}\nASSISTANT: {answer}" (the paper's template), where the
content holds the task's speech span(s) between `<audio>` and `</audio>` and its instruction. The
USTokenizer recipe (speech = adapter embeddings) and the DualSpeechLM processor (speech = USToken
ids) build their sequences from the same `prompt_parts`, so training and inference cannot drift.
It lives beside the models (importing nothing but `phonemes`) so a saved model folder's processor can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .phonemes import phonemize

AUDIO_START, AUDIO_END = "<audio>", "</audio>"
USER, ASSISTANT = "USER: ", "\nASSISTANT:"


@dataclass(frozen=True)
class Task:
    """`instruction` may hold `{placeholders}` filled from the example (e.g. `{question}`).
    `speech_input`: the prompt carries a speech span; `speech_output`: the answer is speech; `spoken_field`: the
    field whose words the answer speaks in order (TTS's text), which `build_inputs` marks for the alignment prior,
    the spoken-text dropout and guidance."""

    name: str
    instruction: str
    speech_input: bool
    speech_output: bool
    spoken_field: str | None = None


TASKS = {
    task.name: task
    for task in (
        Task("asr", "Transcribe the speech.", True, False),
        Task("s2tt", "Translate the speech into {language}.", True, False),
        Task("ser", "Describe the speaking style.", True, False),
        Task("sqa", "Answer the question about the speech: {question}", True, False),
        Task("tts", "Speak this text: {text}", False, True, spoken_field="text"),
        Task("vc", "Say the same words in the target voice.", True, True),
        Task("t2st", "Speak the translation of this text into {language}: {text}", False, True),
        Task("sc", "Answer the spoken question in speech.", True, True),
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


__all__ = ["TASKS", "Task", "answer_text", "build_inputs", "UNDERSTANDING_TASKS", "GENERATION_TASKS", "get_task", "prompt_parts",
           "AUDIO_START", "AUDIO_END"]


def _spoken_span(tokenizer, before: str, spoken: str) -> tuple[int, int]:
    """(first, end): the tokens of `before` that spell `spoken` (its last occurrence there). The span starts at the
    space before it, which a BPE tokenizer joins to the word, so the tokens of `before` up to either end are those
    of the whole."""
    words = spoken.strip()
    start = before.rindex(words)
    end = start + len(words)
    start -= before[:start].endswith(" ")

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    return count(before[:start]), count(before[:end])


def build_inputs(tokenizer, config, examples: list[dict], with_answers: bool, padding_side: str = "right",
                 spoken_text_phonemes: str | None = None) -> dict:
    """Token sequences of a batch of task examples, for training (`with_answers`) or generation.

    Each example: `task`, the fields its prompt needs (`text`, `question`, `language`), `speech_ids`
    (USToken ids 0..K-1 of the input speech, for tasks with speech input) and, with answers,
    `answer` (text) or `answer_speech_ids` (USTokens, generation tasks). `config` is a
    DualSpeechLMConfig (speech token ids). A sequence is
        prompt  = BOS + before + <a_k>... (the speech span) + after         (`prompt_parts`)
        answer  = answer_text(answer) + EOS,  or  <audio> <a_k>... </audio> + EOS
    Returns `input_ids`, `attention_mask`, `condition_mask` (the prompt: what AcousticGPT is
    conditioned on) and `spoken_text_mask` (1 on the prompt tokens of the task's `spoken_field`, which the
    answer speaks in order: the model's alignment prior, spoken-text dropout and guidance read it)
    `[batch, longest]`, with answers `labels` (answer + EOS, -100 elsewhere), and `tasks`. Generation
    prompts are left-padded (`padding_side="left"`) and end where the answer starts. `spoken_text_phonemes` (an
    espeak-ng voice, e.g. "en-us"): the spoken field is written as its phonemes (`phonemes.phonemize`).
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
    if spoken_text_phonemes:  # one espeak-ng call for the batch
        said = [(fields, task.spoken_field) for _, task, fields in items if task.spoken_field]
        for (fields, name), sounds in zip(said, phonemize([fields[name] for fields, name in said], spoken_text_phonemes)):
            fields[name] = sounds
    rows = []
    for example, task, fields in items:
        before, after = prompt_parts(task.name, **fields)
        prompt = [tokenizer.bos_token_id] + tokenizer(before, add_special_tokens=False).input_ids
        spoken = _spoken_span(tokenizer, before, fields[task.spoken_field]) if task.spoken_field else (0, 0)
        if task.speech_input:
            speech = example.get("speech_ids")
            if speech is None or len(speech) == 0:
                raise ValueError(f"task {task.name!r} needs the USTokens of its input speech (speech_ids)")
            prompt += [config.speech_token_offset + int(i) for i in speech]
            prompt += tokenizer(after, add_special_tokens=False).input_ids
        answer = []
        if with_answers:
            if task.speech_output:
                answer = ([config.audio_start_token_id] + [config.speech_token_offset + int(i) for i in example["answer_speech_ids"]]
                          + [config.audio_end_token_id])
            else:
                answer = tokenizer(answer_text(example["answer"]), add_special_tokens=False).input_ids
            answer.append(tokenizer.eos_token_id)
        rows.append((prompt, answer, spoken))
    width = max(len(p) + len(a) for p, a, _ in rows)
    names = ("input_ids", "attention_mask", "condition_mask", "spoken_text_mask")
    batch = {name: torch.zeros(len(rows), width, dtype=torch.long) for name in names}
    batch["input_ids"].fill_(tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for row, (prompt, answer, (first, end)) in enumerate(rows):
        length = len(prompt) + len(answer)
        start = width - length if padding_side == "left" else 0
        batch["input_ids"][row, start : start + length] = torch.tensor(prompt + answer)
        batch["attention_mask"][row, start : start + length] = 1
        batch["condition_mask"][row, start : start + len(prompt)] = 1
        labels[row, start + len(prompt) : start + length] = torch.tensor(answer, dtype=torch.long)
        batch["spoken_text_mask"][row, start + 1 + first : start + 1 + end] = 1  # + 1: the BOS
    if with_answers:
        batch["labels"] = labels
    batch["tasks"] = [example["task"] for example in examples]
    return batch
