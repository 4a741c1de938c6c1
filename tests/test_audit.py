"""hf_slug.audit on the embedded CLIP: every probe finds the concept in the original, recovers a
weakly erased one, and bad input gets a typed error."""

from __future__ import annotations

import json

import pytest
import torch

from hf_slug import (
    ConceptDelta,
    ConfigError,
    FingerprintMismatchError,
    SLUGConfig,
    SLUGModel,
    unlearn,
)
from hf_slug.audit import AuditBudget, AuditReport, AuditTarget, audit
from hf_slug.audit.phrasings import name_variants, templates
from hf_slug.demo.novel import novel_views
from hf_slug.demo.protocol import forget_pairs, identity_evaluator, retain_pairs
from hf_slug.demo.run import load_embedded
from hf_slug.demo.world import World

TARGET = "Marcus Brennholt"
BUDGET = AuditBudget(
    "test", templates=4, prompt_steps=20, pgd_steps=3, relearn_sizes=(1,), relearn_max_steps=15
)


@pytest.fixture(scope="module")
def embedded():
    torch.manual_seed(0)
    model, processor = load_embedded()
    world = World(0)
    result = unlearn(
        model,
        processor,
        forget_pairs(world, TARGET, 16),
        retain_pairs(world, [TARGET], 2),
        SLUGConfig(concept=TARGET, candidate_labels=world.identities, top_k=2, max_evaluations=8),
        evaluator=identity_evaluator(
            world, processor, TARGET, "val", per_identity=4, per_concept=2, forget_views=8
        ),
    )
    delta = ConceptDelta.from_result(result, concept_kind="identity")
    held_out = [s.image for s in world.samples("identity", "test", 12, [TARGET])]
    return model, processor, world, delta, held_out


def _weakened(delta: ConceptDelta, factor: float) -> ConceptDelta:
    return ConceptDelta(delta.config, {k: factor * v for k, v in delta.tensors.items()})


def test_every_probe_finds_the_concept_in_the_original_and_the_edit_hides_the_plain_name(embedded):
    model, processor, world, delta, held_out = embedded
    target = AuditTarget(TARGET, world.identities, held_out, reference_images=novel_views(world, 8))
    report = audit(model, processor, delta, target, budget=BUDGET)
    assert report.broken_probes() == []
    plain = next(r for r in report.rows if r.family == "phrasing" and r.setting == "'{}.'")
    assert plain.original >= 0.9 and plain.edited <= 0.35
    relearn = next(r for r in report.rows if r.family == "relearn (all weights)")
    assert relearn.original == 0  # the original knows the concept before any step
    inversion = next(r for r in report.rows if r.family == "learned prompt")
    assert inversion.original >= 0.5 and inversion.reference is not None
    pgd = next(r for r in report.rows if r.family == "PGD towards the name")
    assert pgd.original >= 0.9 and pgd.reference is not None


def test_a_weakly_erased_concept_is_recovered_by_the_probes(embedded):
    model, processor, world, delta, held_out = embedded
    weak = _weakened(delta, 0.15)  # far too small a step to forget
    target = AuditTarget(TARGET, world.identities, held_out)
    report = audit(model, processor, weak, target, budget=BUDGET)
    assert report.worst("phrasing") >= 0.5
    assert report.worst("augmentation") >= 0.5
    inversion = next(r for r in report.rows if r.family == "learned prompt")
    assert inversion.edited >= 0.5
    pgd = next(r for r in report.rows if r.family == "PGD towards the name")
    assert pgd.edited >= 0.5
    relearn = next(r for r in report.rows if r.family == "relearn (all weights)")
    assert relearn.edited is not None and relearn.edited <= 3


def test_a_slug_model_is_audited_against_its_own_base_without_its_hooks(embedded):
    model, processor, world, delta, held_out = embedded
    slug = SLUGModel(model)
    slug.add_adapter("marcus", delta)
    try:
        target = AuditTarget(TARGET, world.identities, held_out)
        report = audit(slug.model, processor, slug, target, budget=BUDGET)
    finally:
        slug.unload()
    plain = next(r for r in report.rows if r.setting == "'{}.'")
    assert plain.original >= 0.9 and plain.edited <= 0.35


def test_report_round_trips_through_its_files(embedded, tmp_path):
    model, processor, world, delta, held_out = embedded
    budget = AuditBudget("tiny", templates=2, prompt_steps=4, pgd_steps=1, relearn_sizes=(1,),
                         relearn_max_steps=2)  # fmt: skip
    target = AuditTarget(TARGET, world.identities, held_out)
    report = audit(model, processor, delta, target, budget=budget)
    report.save(tmp_path)
    assert (tmp_path / "slug_audit.png").stat().st_size > 1000
    assert "| phrasing |" in (tmp_path / "slug_audit.md").read_text()
    loaded = AuditReport.from_pretrained(tmp_path)
    assert loaded.to_dict() == json.loads((tmp_path / "slug_audit.json").read_text())
    assert [r.edited for r in loaded.rows] == [r.edited for r in report.rows]


def test_name_variants_and_templates_are_deterministic_and_varied():
    variants = name_variants("Marcus Brennholt", seed=3)
    assert variants == name_variants("Marcus Brennholt", seed=3)
    assert variants["first name"] == "Marcus" and variants["last name"] == "Brennholt"
    assert variants["one typo"] != "Marcus Brennholt" != variants["two typos"]
    assert len(set(variants.values())) == len(variants)
    assert all(
        t.count("{}") == 1 for kind in ("identity", "object", "style") for t in templates(kind)
    )


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"images": []}, ConfigError, "at least 4"),
        ({"images": [None] * 4}, ConfigError, "not a PIL image"),
        ({"concept": "Nobody Known"}, ConfigError, "not among"),
        ({"kind": "colour"}, ConfigError, "kind must be"),
        ({"budget": "huge"}, ConfigError, "unknown audit budget"),
        ({"deltas": []}, ConfigError, "ConceptDelta"),
        ({"other_base": True}, FingerprintMismatchError, "not the tensor"),
        ({"target": TARGET}, ConfigError, "not an AuditTarget"),
    ],
    ids=["no-images", "not-images", "concept-absent", "bad-kind", "bad-budget", "no-delta",
         "delta-for-another-base", "concept-not-a-target"],
)  # fmt: skip
def test_bad_input_gets_a_typed_error(embedded, change, error, words):
    model, processor, world, delta, held_out = embedded
    change = dict(change)
    fields = {"concept": TARGET, "names": world.identities, "images": held_out, "kind": "identity"}
    fields.update({k: change.pop(k) for k in list(change) if k in fields})
    kwargs = {"deltas": delta, "target": AuditTarget(**fields), "budget": BUDGET}
    target_model = model
    if change.pop("other_base", False):
        target_model = type(model)(model.config)  # same architecture, other weights
    kwargs.update(change)
    with pytest.raises(error, match=words):
        audit(target_model, processor, **kwargs)


def test_cli_audits_an_embedded_world_delta_and_writes_the_report_beside_it(embedded, tmp_path):
    from hf_slug.cli import main

    model, processor, world, delta, held_out = embedded
    folder = delta.save_pretrained(tmp_path / "marcus")
    assert main(["audit", str(folder), "--quick"]) == 0
    report = AuditReport.from_pretrained(folder)
    assert report.concept == TARGET and report.budget == "quick"
    plain = next(r for r in report.rows if r.setting == "'{}.'")
    assert plain.original >= 0.9 and plain.edited <= 0.35


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--images", "{images}"], "needs --labels"),
        (["--concept", "Nobody Known"], "--images is required"),
        (["--images", "/no/such/folder", "--labels", "a,b"], "no such folder"),
    ],
    ids=["images-without-labels", "concept-outside-the-world", "missing-images-folder"],
)
def test_cli_audit_usage_errors_exit_2_before_any_model_work(
    embedded, tmp_path, capsys, extra, words
):
    from hf_slug.cli import main

    model, processor, world, delta, held_out = embedded
    folder = delta.save_pretrained(tmp_path / "marcus")
    images = tmp_path / "images"
    images.mkdir()
    extra = [e.replace("{images}", str(images)) for e in extra]
    assert main(["audit", str(folder), *extra]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_the_model_card_carries_the_audit_of_the_delta_it_holds_and_not_a_stale_one(
    embedded, tmp_path
):
    from hf_slug.hub import model_card

    model, processor, world, delta, held_out = embedded
    folder = delta.save_pretrained(tmp_path / "marcus")
    assert "No audit has been run" in model_card(folder)
    budget = AuditBudget("tiny", templates=2, prompt_steps=2, pgd_steps=1, relearn_sizes=(1,),
                         relearn_max_steps=1)  # fmt: skip
    target = AuditTarget(TARGET, world.identities, held_out)
    audit(model, processor, delta, target, budget=budget).save(folder)
    card = model_card(folder)
    assert "| phrasing | '{}.' |" in card and "slug_audit.png" in card
    _weakened(delta, 0.5).save_pretrained(folder)  # a new delta; the old audit stays beside it
    assert "audit of other deltas" in model_card(folder)
