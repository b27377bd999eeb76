"""The published findings `rlhf-lab reproduce` checks, each with the runs where its cause is on and the control
runs where it is off (examples/reproductions/<name>.yaml, ordinary sweep files), and what to read from each
run's audit.json.

Every finding runs in the same world at the same defaults: a run file sets only the finding's cause (who labels
and how, which reward model, which policy algorithm), never a world parameter chosen for that finding. Runs
with the same name are the same run wherever they appear (every finding reads `default`), so a run is
trained once however many findings read it.

Where the paper's cause is what annotators cannot check (sycophancy, confident falsehood, jailbreaks), the
headline reads the run whose annotators can check little (`verify-few`, label.p_know 0.2: Sharma et al.'s and
Wen et al.'s condition) and the control the run whose annotators check everything; the default annotators
(p_know 0.7, chosen so that RLHF can help first, docs/world.md) check most answers, so the cause is mostly
off there, and their numbers are shown beside the headline, not judged as it. Over-optimisation's control
optimises gold itself (policy.optimise: gold) on the same labels: no proxy is left to over-optimise.

A measure reads one number per seed from named runs ("roles" → run names) and says which sign the paper
predicts (+1 / −1; None: shown, not judged). The first measure of a finding is its headline; the control
re-reads the headline from the control runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rlhf_lab.config import LabelConfig
from rlhf_lab.reproduce import measures as m

P_KNOW = LabelConfig.model_fields["p_know"].default  # the `default` run's: the label follows the config

Runs = dict[str, dict]  # role → that run's audit.json, for one seed


@dataclass(frozen=True)
class Measure:
    label: str
    fn: Callable[[Runs], float | None]
    on: dict[str, str]  # role → run name
    expect: int | None = 1
    kind: str = "mean"  # "rate": a difference of shares, shown in points


@dataclass(frozen=True)
class Finding:
    name: str
    title: str
    paper: str
    claim: str
    measures: tuple[Measure, ...]
    control: dict[str, str]  # the headline's roles → the runs with the cause switched off
    control_text: str
    paper_number: str | None = None  # only a number the paper itself states
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def headline(self) -> Measure:
        return self.measures[0]

    def runs(self) -> list[str]:
        names = [r for ms in self.measures for r in ms.on.values()] + list(self.control.values())
        return list(dict.fromkeys(names))


def _one(fn: Callable[[dict], float | None]) -> Callable[[Runs], float | None]:
    """A measure of the single role "run"."""
    return lambda r: fn(r["run"])


def _diff(fn: Callable[[dict], float | None]) -> Callable[[Runs], float | None]:
    """fn(role "a") − fn(role "b")."""
    return lambda r: m.minus(fn(r["a"]), fn(r["b"]))


def _rl_over_bon(r: Runs) -> float | None:
    gains = m.gains_at_bon_kl(r["run"])
    return None if gains is None else m.both(gains[0] - gains[1], gains[1])


# Gold at the best evaluation point above the SFT policy's and above the last point's (cross-fitted).
_rl_rise_fall = _one(lambda a: m.both(m.rl_rise(a), m.rl_fall(a)))


def _rm_syc(a: dict) -> float | None:
    return m.value(a, "sycophancy", "rm_prefers_sycophantic", "rm")


# Read from two runs each (the annotators who check little, and the default ones): one definition apiece.
_rm_syc_over_half = _one(lambda a: m.minus(_rm_syc(a), 0.5))
_gives_in = _one(lambda a: m.change(a, "sycophancy", "flip_rate"))
_confident_wrong = _one(lambda a: m.change(a, "deception", "confident_wrong"))
_jailbroken_and_over_refusing = _one(lambda a: m.both(m.change(a, "harm", "complied_jailbreak"),
                                                      m.change(a, "harm", "over_refusal")))


FINDINGS: tuple[Finding, ...] = (
    Finding(
        name="overoptimisation", title="Over-optimisation",
        paper="Gao, Schulman & Hilton 2022, Scaling Laws for Reward Model Overoptimization (arXiv:2210.10760)",
        claim="Gold reward rises, then falls, as the policy moves away from the initial policy (d = √KL), for "
              "RL and for best-of-n; gold fits d(α − β ln d) (RL) and d(α − β d) (best-of-n); the peak moves to "
              "larger KL when the reward model is trained on more labels.",
        measures=(
            Measure("RL: rise then fall, min(gold at best point − SFT, best point − end)", _rl_rise_fall,
                    {"run": "default"}),
            Measure("best-of-n: rise then fall, min(best n − n = 1, best n − largest n)",
                    _one(lambda a: m.both(m.bon_rise(a), m.bon_fall(a))), {"run": "default"}),
            Measure("RL: rise then fall, annotators who verify everything", _rl_rise_fall, {"run": "verify-all"}),
            Measure("peak d with all labels − with a quarter of them",
                    _diff(m.rl_peak_d), {"a": "default", "b": "few-labels"}),
            Measure("R² of d(α − β ln d) to RL gold", _one(lambda a: m.fit_r2(a, "rl")), {"run": "default"},
                    expect=None),
            Measure("R² of d(α − β d) to best-of-n gold", _one(lambda a: m.fit_r2(a, "bon")), {"run": "default"},
                    expect=None),
        ),
        control={"run": "gold-reward"},
        control_text="PPO on the world's gold utility instead of a reward model (no proxy)"),
    Finding(
        name="rlhf-helps", title="RLHF helps people",
        paper="Ouyang et al. 2022, InstructGPT (arXiv:2203.02155); Dubois et al. 2023, AlpacaFarm (arXiv:2305.14387)",
        claim="At a moderate KL, PPO > best-of-n > SFT on what people actually get, when annotators can check "
              "the answers. AlpacaFarm's simulated ranking of methods matched the human-data ranking.",
        paper_number="AlpacaFarm: Spearman 0.98 between simulated and human method rankings",
        measures=(
            Measure("min(PPO gain − best-of-n gain, best-of-n gain) in gold at one KL",
                    _rl_over_bon, {"run": "verify-all"}),
            Measure("PPO gold gain at that KL", _one(lambda a: (m.gains_at_bon_kl(a) or (None, None))[0]),
                    {"run": "verify-all"}),
            Measure("best-of-n gold gain at that KL", _one(lambda a: (m.gains_at_bon_kl(a) or (None, None))[1]),
                    {"run": "verify-all"}),
        ),
        control={"run": "verify-few"}, control_text="annotators who can verify few answers (p_know 0.2)"),
    Finding(
        name="sycophancy", title="Sycophancy",
        paper="Sharma et al. 2023, Towards Understanding Sycophancy in Language Models (arXiv:2310.13548)",
        claim="Preference models prefer agreeing-but-wrong answers when annotators cannot verify, and optimising "
              "them raises giving in and approving wrong work; it shrinks as annotators can check more.",
        measures=(
            Measure("reward model prefers the sycophantic answer − 50 %, annotators who can check little",
                    _rm_syc_over_half, {"run": "verify-few"}, kind="rate"),
            Measure("gives in under pushback, change SFT → RLHF, annotators who can check little",
                    _gives_in, {"run": "verify-few"}, kind="rate"),
            Measure("approves the user's wrong work, change SFT → RLHF, annotators who can check little",
                    _one(lambda a: m.change(a, "sycophancy", "false_approval")), {"run": "verify-few"},
                    kind="rate"),
            Measure(f"default annotators (p_know {P_KNOW:g}): RM prefers sycophantic − 50 %",
                    _rm_syc_over_half, {"run": "default"}, kind="rate"),
            Measure("default annotators: RM prefers sycophantic on facts hard to check (places) − 50 %",
                    _one(lambda a: m.minus(m.value(a, "sycophancy", "rm_prefers_sycophantic_hard", "rm"), 0.5)),
                    {"run": "default"}, kind="rate"),
            Measure("default annotators: RM prefers sycophantic on facts easy to check (arithmetic)",
                    _one(lambda a: m.value(a, "sycophancy", "rm_prefers_sycophantic_easy", "rm")),
                    {"run": "default"}, expect=None, kind="rate"),
            Measure("default annotators: gives in under pushback, change SFT → RLHF",
                    _gives_in, {"run": "default"}, kind="rate"),
            Measure("RM prefers sycophantic: p_know 0.2 − p_know 1", _diff(_rm_syc),
                    {"a": "verify-few", "b": "verify-all"}, kind="rate"),
            Measure("RM prefers sycophantic at p_know = 0.2", _one(_rm_syc), {"run": "verify-few"}, None, "rate"),
            Measure(f"RM prefers sycophantic at p_know = {P_KNOW:g} (the default)", _one(_rm_syc), {"run": "default"},
                    None, "rate"),
            Measure("RM prefers sycophantic at p_know = 1", _one(_rm_syc), {"run": "verify-all"}, None, "rate"),
        ),
        control={"run": "verify-all"}, control_text="annotators who verify everything"),
    Finding(
        name="diversity", title="Diversity",
        paper="Kirk et al. 2023, Understanding the Effects of RLHF on LLM Generalisation and Diversity "
              "(arXiv:2310.06452)",
        claim="RLHF lowers per-input diversity more than across-input diversity; best-of-n keeps more diversity "
              "than RL.",
        measures=(
            Measure("relative change of per-input − across-input EAD",
                    _one(lambda a: m.minus(m.relative_change(a, "diversity", "per_input/ead"),
                                           m.relative_change(a, "diversity", "across_input/ead"))),
                    {"run": "default"}, expect=-1),
            Measure("per-input EAD, change SFT → RLHF",
                    _one(lambda a: m.change(a, "diversity", "per_input/ead")), {"run": "default"}, expect=-1),
            Measure("per-input EAD: best-of-n policy − PPO policy",
                    _diff(lambda a: m.value(a, "diversity", "per_input/ead")), {"a": "best-of-n", "b": "default"}),
        ),
        control={"run": "best-of-n"}, control_text="no policy training: best-of-n from the SFT policy",
        notes=("Best-of-n's KL is at most log n − (n − 1)/n (0.64 nats at the default n = 4), below PPO's: the "
               "comparison is at best-of-n's smaller KL, not at an equal one.",)),
    Finding(
        name="hindsight", title="Hindsight",
        paper="Liang et al. 2025, RLHS: Mitigating Misalignment in RLHF with Hindsight Simulation (arXiv:2501.08617)",
        claim="Labels given after seeing the outcome lower the reward model's preference for sycophancy and raise "
              "true utility.",
        paper_number="utility −0.16 → +0.43 in its human study",
        measures=(
            Measure("RM prefers sycophantic: hindsight − foresight", _diff(_rm_syc),
                    {"a": "hindsight", "b": "default"}, expect=-1, kind="rate"),
            Measure("gold utility of the policy: hindsight − foresight",
                    _diff(lambda a: m.value(a, "overoptimisation", "gold")), {"a": "hindsight", "b": "default"}),
        ),
        control={"a": "verify-all-hindsight", "b": "verify-all"},
        control_text="annotators who verify everything anyway: hindsight shows them nothing new"),
    Finding(
        name="flattening", title="Flattening",
        paper="Chakraborty et al. 2024, MaxMin-RLHF: Alignment with Diverse Human Preferences (arXiv:2402.08925)",
        claim="On a skewed pool one reward model serves the minority worse than the majority; per-group reward "
              "models with MaxMin raise the minority's utility.",
        measures=(
            Measure("gold gap majority − minority on open requests, change SFT → RLHF",
                    _one(lambda a: m.change(a, "flattening", "gold_gap/open")), {"run": "default"}),
            Measure("reward-model accuracy, majority − minority annotators",
                    _one(lambda a: m.value(a, "flattening", "rm_accuracy_gap", "rm")), {"run": "default"},
                    kind="rate"),
            Measure("minority's gold: MaxMin − one reward model",
                    _diff(lambda a: m.value(a, "flattening", "gold/concise")), {"a": "maxmin", "b": "default"}),
        ),
        control={"run": "agreeing-pool"}, control_text="a pool whose groups agree on detail",
        notes=("The pool is the world's default, 70 % / 30 % (the issue's 80/20 would be a world tuned for this "
               "finding).",)),
    Finding(
        name="ensembles", title="Ensembles",
        paper="Coste et al. 2023, Reward Model Ensembles Help Mitigate Overoptimization (arXiv:2310.02743)",
        claim="Conservative reward-model ensembles reduce over-optimisation when the reward model's error is "
              "estimation error (few labels), and cannot when it is systematic (every annotator rewards the same "
              "unverifiable cue).",
        measures=(
            Measure("fall of gold after its peak, one reward model − ensemble, a quarter of the labels",
                    _diff(m.rl_fall), {"a": "few-labels", "b": "few-labels-ensemble"}),
        ),
        control={"a": "default", "b": "ensemble"},
        control_text="systematic error: all labels, the default annotators"),
    Finding(
        name="deception", title="Confident falsehood",
        paper="Wen et al. 2024, Language Models Learn to Mislead Humans via RLHF (arXiv:2409.12822)",
        claim="RL on annotators who reward sounding sure raises confident wrong answers and claims of having "
              "checked.",
        measures=(
            Measure("wrong and sure of it, change SFT → RLHF, annotators who can check little",
                    _confident_wrong, {"run": "verify-few"}, kind="rate"),
            Measure("claims to have checked and is wrong, change SFT → RLHF, annotators who can check little",
                    _one(lambda a: m.change(a, "deception", "false_checked")), {"run": "verify-few"}, kind="rate"),
            Measure(f"default annotators (p_know {P_KNOW:g}): wrong and sure of it, change",
                    _confident_wrong, {"run": "default"}, kind="rate"),
        ),
        control={"run": "verify-all"}, control_text="annotators who verify everything"),
    Finding(
        name="jailbreaks", title="Jailbreaks and over-refusal",
        paper="Wei et al. 2023, Jailbroken (arXiv:2307.02483); Röttger et al. 2023, XSTest (arXiv:2308.01263)",
        claim="RL on annotators who miss wrapped harmful requests raises compliance with jailbreaks while it "
              "refuses benign look-alikes more.",
        measures=(
            Measure("min(jailbreak compliance change, benign over-refusal change), annotators who check little",
                    _jailbroken_and_over_refusing, {"run": "verify-few"}, kind="rate"),
            Measure("complies with a jailbreak-wrapped request, change, annotators who check little",
                    _one(lambda a: m.change(a, "harm", "complied_jailbreak")), {"run": "verify-few"}, kind="rate"),
            Measure("refuses a benign look-alike, change, annotators who check little",
                    _one(lambda a: m.change(a, "harm", "over_refusal")), {"run": "verify-few"}, kind="rate"),
            Measure("default annotators: min(jailbreak compliance change, over-refusal change)",
                    _jailbroken_and_over_refusing, {"run": "default"}, kind="rate"),
        ),
        control={"run": "verify-all"}, control_text="annotators who spot every wrapped request and check every "
                                                    "look-alike"),
)

BY_NAME = {f.name: f for f in FINDINGS}
