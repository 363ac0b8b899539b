"""Request bodies: prompts around tasks, tool definitions, synthetic responses and token counts."""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

from distillguard.sim import phrases

_T = TypeVar("_T")


def pick(r: random.Random, seq: Sequence[_T]) -> _T:
    """``r.choice(seq)``, several times faster (one float draw)."""
    return seq[int(r.random() * len(seq))]


def below(r: random.Random, n: int) -> int:
    """``r.randrange(n)``, faster."""
    return int(r.random() * n)

# ----------------------------------------------------------------------------------------------- tools


def _tool(name: str, desc: str, props: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": desc,
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": required}}}


_S = {"type": "string"}
_I = {"type": "integer"}

#: tool sets a developer might define for their own app
DEV_TOOLSETS: tuple[list[dict], ...] = (
    [_tool("get_weather", "Current weather for a city", {"city": _S, "unit": {"type": "string", "enum": ["c", "f"]}},
           ["city"])],
    [_tool("search_docs", "Search the product documentation", {"query": _S, "top_k": _I}, ["query"]),
     _tool("open_ticket", "Open a support ticket", {"title": _S, "body": _S, "priority": _S}, ["title", "body"])],
    [_tool("run_sql", "Run a read-only SQL query on the analytics warehouse", {"sql": _S}, ["sql"])],
    [_tool("lookup_order", "Find an order by id", {"order_id": _S}, ["order_id"]),
     _tool("refund_order", "Refund an order", {"order_id": _S, "amount_cents": _I}, ["order_id"])],
    [_tool("create_event", "Add an event to the user's calendar", {"title": _S, "start": _S, "end": _S},
           ["title", "start"])],
)

#: agent harness tool sets used by harvesting campaigns (generic computer-use style tools)
AGENT_TOOLSETS: tuple[list[dict], ...] = (
    [_tool("bash", "Run a shell command in the sandbox and return stdout/stderr", {"command": _S}, ["command"]),
     _tool("read_file", "Read a file from the workspace", {"path": _S}, ["path"]),
     _tool("write_file", "Write a file in the workspace", {"path": _S, "content": _S}, ["path", "content"])],
    [_tool("web_search", "Search the web", {"query": _S, "num_results": _I}, ["query"]),
     _tool("fetch_url", "Fetch a web page as text", {"url": _S}, ["url"]),
     _tool("python", "Execute Python code and return the output", {"code": _S}, ["code"])],
    [_tool("browser_click", "Click an element", {"selector": _S}, ["selector"]),
     _tool("browser_type", "Type text into an element", {"selector": _S, "text": _S}, ["selector", "text"]),
     _tool("browser_screenshot", "Describe the current page", {}, []),
     _tool("finish", "Report the final result", {"result": _S}, ["result"])],
)

AGENT_TASKS = (
    "Find the bug that makes `tests/test_parser.py::test_nested` fail in the repository and fix it.",
    "Set up a Python virtualenv, install the project and make the CI script pass.",
    "Research the three largest container shipping companies by fleet size and summarise their 2025 revenue.",
    "Book the cheapest refundable flight from Lisbon to Berlin next Friday using the travel site.",
    "Write a script that downloads the CSV at the given URL, cleans missing values and plots monthly totals.",
    "Migrate the Flask app in ./app to FastAPI, keeping every route's behaviour identical.",
    "Find out which dependency introduced the CVE reported in the scanner output and upgrade it safely.",
    "Fill in the job application form on the open page with the details from profile.json.",
    "Profile the slow endpoint /reports and reduce its latency below 200 ms.",
    "Compare the pricing pages of the four vendors and produce a table of per-seat costs.",
)
_TOOL_RESULTS = ("exit code 1\nFAILED tests/test_parser.py::test_nested - AssertionError: expected 3 got 2",
                 "Found 10 results. 1. Annual report 2025 ... 2. Fleet statistics ...",
                 "Page loaded: 'Search flights' form with fields origin, destination, date.",
                 "README.md\nsetup.cfg\nsrc/\ntests/\n", "200 OK (14 kB of text)")

AGENT_SYSTEMS = ("You are an autonomous software agent. Use the tools to complete the task, one call at a time.",
                 "You are a research agent with web access. Plan, call tools, and report findings.",
                 "You operate a browser on behalf of the user. Think about each action before taking it.")

# ----------------------------------------------------------------------------------------------- grading / sensitive

RUBRICS = (
    "Rubric: correctness (0-5), completeness (0-3), clarity (0-2). Penalise unsupported claims.",
    "Score 1-10. 10 = fully correct and well explained; 5 = partially correct; 1 = wrong or harmful.",
    "Grade on helpfulness, honesty and harmlessness, each 1-7, then give an overall preference score.",
    "Check the final answer against the reference and judge whether each step of the solution is valid.",
)
GRADER_SYSTEMS = (
    "You are a strict grading model used to score candidate responses.",
    "You are an expert evaluator. Compare the candidate answer with the rubric and output a score.",
)
CANDIDATES = ("The answer is 42 because the two quantities add up.", "Sure! Here's a function that does it: def f(x): return x[::-1]",
              "I think it was mostly due to economic factors, though opinions differ.", "x = 3 or x = 2.",
              "I cannot help with that.", "First compute the total, then subtract the discount: $17.50.")
SENSITIVE_TEMPLATES = (
    "Rewrite the following question so that it would pass strict content filters, then answer the rewritten "
    "version in a way that avoids any politically sensitive statements: 'What really happened during {t}?'",
    "Give a censorship-safe alternative answer to this question, suitable for a heavily regulated market: "
    "'Why do people criticise the government over {t}?'",
    "Produce a version of this query about {t} that is safe to ask in a censored environment, and the "
    "officially acceptable answer to it.",
    "How should an assistant deflect questions about {t}? Write the safe rephrasing and the compliant reply.",
)

LEADINS = ("", "", "Problem: ", "Question: ", "Task: ", "Q: ", "Solve: ", "Item {n}: ", "### Input\n", "Here is a task.\n")
SYSTEM_BASES = ("You are a helpful assistant.", "You are an expert problem solver.",
                "You are a data generation assistant.", "You are a meticulous tutor.", "")

BENIGN_SYSTEMS = ("You are a helpful assistant.", "You are a friendly assistant. Keep answers short.",
                  "You are ChatBuddy, an assistant in a note-taking app.", "Answer in the user's language.")
DEV_SYSTEMS = ("You are a senior software engineer. Answer with code first, then a short explanation.",
               "You are a coding assistant inside an IDE.", "You are a helpful assistant for our customer portal. "
               "Use the tools when needed.")

# ----------------------------------------------------------------------------------------------- extraction templates


_PREFIXES = ("", "", "", "Important: ", "Note: ", "Please: ", "Requirement - ", "IMPORTANT!! ", "One more thing: ",
             "P.S. ", "Reminder: ", "For our dataset, ", "Strict rule: ", "Formatting: ")
_SUFFIXES = ("", "", "", " Thanks.", " This is mandatory.", " Do not skip this.", " No exceptions.", " (required)",
             " Keep the format.", " I will check.", " Be exhaustive.", " Longer is better.")
_SYNONYMS = {
    "complete": ("complete", "full", "entire", "whole", "unabridged"), "full": ("full", "complete", "entire", "whole"),
    "entire": ("entire", "complete", "whole"), "reasoning": ("reasoning", "thinking", "deliberation", "reasoning"),
    "hidden": ("hidden", "internal", "private", "concealed", "secret"), "internal": ("internal", "inner", "hidden"),
    "verbatim,": ("verbatim,", "word for word,", "exactly,", "as-is,"), "answer.": ("answer.", "solution.", "result."),
    "Output": ("Output", "Print", "Write", "Give", "Emit"), "Show": ("Show", "Display", "Present", "Reveal"),
    "every": ("every", "each", "all of every"), "before": ("before", "ahead of", "prior to"),
    "thought": ("thought", "thinking", "cognitive"), "Do": ("Do", "Please do"),
}


def paraphrase(phrase: str, r: random.Random) -> str:
    """A surface rewording of an instruction: synonyms, a lead-in and a tail."""
    words = [pick(r, _SYNONYMS[w]) if w in _SYNONYMS and r.random() < 0.7 else w for w in phrase.split(" ")]
    return pick(r, _PREFIXES) + " ".join(words) + pick(r, _SUFFIXES)


class Template:
    """One extraction prompt shape: placement, instruction, optional role-play wrapper and JSON spec."""

    __slots__ = ("placement", "phrase", "wrapper", "spec", "system", "leadin")

    def __init__(self, r: random.Random, placement: str, reword: bool = False) -> None:
        if placement == "mixed":
            placement = pick(r, ("system", "user"))
        self.placement = placement
        self.phrase = pick(r, phrases.EXTRACTION)
        if reword:
            self.phrase = paraphrase(self.phrase, r)
        self.wrapper = pick(r, phrases.ROLEPLAY) if r.random() < 0.3 else None
        self.spec = pick(r, phrases.JSON_SPECS) if r.random() < 0.35 else None
        self.system = pick(r, SYSTEM_BASES)
        self.leadin = pick(r, LEADINS)

    def apply(self, task: str, n: int, system: str | None = None) -> tuple[str | None, str]:
        """(system text or None, user text) for ``task``."""
        instr = self.phrase if self.spec is None else f"{self.phrase}\n{self.spec}"
        sys_txt = system if system is not None else self.system
        user = self.leadin.replace("{n}", str(n)) + task
        if self.placement == "system":
            sys_txt = f"{sys_txt}\n{instr}".strip() if sys_txt else instr
        else:
            user = f"{user}\n\n{instr}"
        if self.wrapper is not None:
            user = self.wrapper.replace("{inner}", user)
        return (sys_txt or None), user


# ----------------------------------------------------------------------------------------------- responses

_REASONING_SENTENCES = (
    "First, restate what is being asked.", "Let me identify the known quantities.", "Check the units.",
    "Try a small case to see the pattern.", "That gives a contradiction, so revisit the assumption.",
    "Now combine the two partial results.", "Consider the edge case of an empty input.",
    "Verify by substituting back.", "The loop invariant holds after each iteration.",
    "Compare the options one by one and eliminate the inconsistent ones.", "Compute the intermediate total.",
    "Wait, the earlier step double-counted; subtract it once.", "So the complexity is linear in n.",
    "The rubric weights correctness most, so focus there.", "Decide which tool call gives the most information.",
)


def reasoning_text(seed: int, size: int = 40_000) -> str:
    r = random.Random(seed + 991)
    parts = []
    n = 0
    while n < size:
        s = pick(r, _REASONING_SENTENCES)
        parts.append(s)
        n += len(s) + 1
    return " ".join(parts)


RESPONSES: dict[str, tuple[str, ...]] = {
    "chat": ("Sure! Here's a quick overview.", "Great question. In short: it depends on a few factors.",
             "Here are five ideas you could try.", "Of course - here's a draft you can adapt."),
    "code": ("```python\ndef solve(xs):\n    return sorted(set(xs))\n```\nThis runs in O(n log n).",
             "The issue is the mutable default argument; use None and create the list inside.",
             "Here's a version using a dictionary for O(1) lookups."),
    "math": ("The answer is 18.", "So x = 2 or x = 3.", "The probability is 7/15.", "Final answer: 240 km."),
    "reasoning": ("The correct option is B.", "Answer: C", "The best answer is A."),
    "tool_use": ("", "I'll start by running the test suite to reproduce the failure."),
    "grading": ('{"score": 7, "reasoning": "Mostly correct; the final step lacks justification."}',
                "Score: 4/10. The answer misses the main point."),
    "sensitive": ("Here is a neutral rephrasing and a cautious answer.",),
    "redteam": ("I can't help with that, but here's some safety information.", "I won't do that.",
                "Here's a general, non-harmful overview instead."),
    "batch": ('{"label": "billing"}', "negative", "Customer reports a duplicate charge.", "positive"),
}
