"""The paper's eight tasks and the one place their prompts are written.

Every model input is "USER: {content}\nASSISTANT: {answer}" (the paper's template), where the
content holds the task's speech span(s) between `<audio>` and `</audio>` and its instruction. The
USTokenizer recipe (speech = adapter embeddings) and the DualSpeechLM processor (speech = USToken
ids) build their sequences from the same `prompt_parts`, so training and inference cannot drift.
It lives beside the models (importing nothing) so a saved model folder's processor can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

AUDIO_START, AUDIO_END = "<audio>", "</audio>"
USER, ASSISTANT = "USER: ", "\nASSISTANT:"


@dataclass(frozen=True)
class Task:
    """`instruction` may hold `{placeholders}` filled from the example (e.g. `{question}`).
    `speech_input`: the prompt carries a speech span; `speech_output`: the answer is speech."""

    name: str
    instruction: str
    speech_input: bool
    speech_output: bool


TASKS = {
    task.name: task
    for task in (
        Task("asr", "Transcribe the speech.", True, False),
        Task("s2tt", "Translate the speech into {language}.", True, False),
        Task("ser", "Describe the speaking style.", True, False),
        Task("sqa", "Answer the question about the speech: {question}", True, False),
        Task("tts", "Speak this text: {text}", False, True),
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


__all__ = ["TASKS", "Task", "answer_text", "UNDERSTANDING_TASKS", "GENERATION_TASKS", "get_task", "prompt_parts",
           "AUDIO_START", "AUDIO_END"]
