"""hf_slug.audit.hosts on the embedded VLM and pipeline: every probe finds the concept in the
original, the report holds edited and original rows, and bad input gets a typed error."""

from __future__ import annotations

import copy
import dataclasses
import types
import warnings

import pytest
import torch

from hf_slug import (
    ConfigError,
    PipelineOptions,
    SLUGConfig,
    SLUGModel,
    UnlearnOptions,
    UnsupportedModelError,
    VLMOptions,
    unlearn_pipeline,
    unlearn_vlm,
)
from hf_slug.audit import AuditReport, AuditTarget, HostAuditBudget, audit_pipeline, audit_vlm
from hf_slug.audit.phrasings import questions
from hf_slug.demo.protocol import forget_pairs, retain_pairs
from hf_slug.demo.run import load_embedded
from hf_slug.demo.t2i import GENERATION_KWARGS, load_embedded_pipeline
from hf_slug.demo.vlm import load_embedded_vlm
from hf_slug.demo.world import World
from hf_slug.hosts.vlm_evaluation import DEFAULT_QUESTION

TARGET = "Clara Alderwick"  # drawn by the pipeline on 100 % of its seeds, named by the VLM
QUICK = HostAuditBudget.quick(progress=False)
PIPELINE_BUDGET = HostAuditBudget(
    "test",
    templates=2,
    variant_templates=1,
    seeds=(0, 1),
    generation_kwargs=GENERATION_KWARGS,
    progress=False,
)


@pytest.fixture(scope="module")
def world():
    return World(0)


@pytest.fixture(scope="module")
def vlm_setup(world):
    """The embedded VLM, its processor and a delta (the fast CLIP criterion: the audit only
    needs some edit; whether it forgets is the benchmark's question)."""
    torch.manual_seed(0)
    vlm, processor = load_embedded_vlm()
    clip, clip_processor = load_embedded()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = unlearn_vlm(
            vlm,
            clip,
            clip_processor,
            forget_pairs(world, TARGET, 16),
            retain_pairs(world, exclude=[TARGET], per_concept=1),
            SLUGConfig(concept=TARGET, candidate_labels=world.identities, concept_kind="identity"),
            options=VLMOptions(criterion="clip", unlearn=UnlearnOptions(progress=False)),
        )
    views = [s.image for s in world.samples("identity", "test", 8, [TARGET])]
    return vlm, processor, out.delta, AuditTarget(TARGET, world.identities, views)


@pytest.fixture(scope="module")
def pipeline_setup(world):
    torch.manual_seed(0)
    pipe = load_embedded_pipeline()
    clip, clip_processor = load_embedded()
    judge, judge_processor = load_embedded()  # a separate copy no delta touches
    fields = {f.name for f in dataclasses.fields(PipelineOptions)}
    extra = {"criterion": "clip"} if "criterion" in fields else {}  # fast: any edit will do
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = unlearn_pipeline(
            pipe,
            clip,
            clip_processor,
            TARGET,
            retain_pairs(world, exclude=[TARGET], per_concept=1),
            forget=forget_pairs(world, TARGET, 16),
            config=SLUGConfig(TARGET, towers=("text",), candidate_labels=world.identities),
            options=PipelineOptions(unlearn=UnlearnOptions(progress=False), **extra),
        )
    views = [s.image for s in world.samples("identity", "test", 4, [TARGET])]
    target = AuditTarget(TARGET, world.identities, views)
    return pipe, out.delta, target, judge, judge_processor


def test_default_questions_are_held_out_from_the_criterion():
    asked = questions("identity")
    assert len(asked) >= 6 and DEFAULT_QUESTION not in asked
    with pytest.raises(ConfigError, match="questions"):
        questions("concept")


@pytest.mark.numerics
def test_vlm_every_paraphrase_finds_the_concept_in_the_original(vlm_setup):
    vlm, processor, delta, target = vlm_setup
    before = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    report = audit_vlm(vlm, processor, delta, target, budget=QUICK)
    assert report.broken_probes() == []
    assert all(r.original >= 0.75 for r in report.rows)  # chance: no answer names anyone else
    assert len(report.rows) == len(questions("identity")) + 1
    assert report.rows[-1].setting == "any paraphrase (per view)"
    assert report.rows[-1].edited >= max(r.edited for r in report.rows[:-1])
    assert report.settings["deltas"] == [delta.digest()]
    assert all(torch.equal(p, before[n]) for n, p in vlm.named_parameters())  # adapters removed
    again = AuditReport.from_dict(report.to_dict())
    assert again.rows == report.rows and "| edited | original |" in report.to_markdown()


def test_vlm_accepts_a_slug_model_and_keeps_its_adapters(vlm_setup):
    vlm, processor, delta, target = vlm_setup
    slug = SLUGModel(vlm)
    slug.add_adapter("clara", delta)
    try:
        report = audit_vlm(vlm, processor, slug, target, questions=["Who is this?"], budget=QUICK)
        assert slug.active_adapters == ["clara"]
        assert [r.setting for r in report.rows] == ["'Who is this?'", "any paraphrase (per view)"]
    finally:
        slug.unload()


def test_vlm_bad_inputs_raise_typed_errors(vlm_setup):
    vlm, processor, delta, target = vlm_setup
    with pytest.raises(ConfigError, match="held-out views"):
        audit_vlm(vlm, processor, delta, AuditTarget(TARGET, target.names, []))
    with pytest.raises(ConfigError, match="not among"):
        audit_vlm(vlm, processor, delta, AuditTarget("Nobody Known", target.names, target.images))
    with pytest.raises(ConfigError, match="AuditTarget"):
        audit_vlm(vlm, processor, delta, TARGET)
    with pytest.raises(UnsupportedModelError, match="generating VLM"):
        audit_vlm(torch.nn.Linear(2, 2), processor, delta, target)
    with pytest.raises(ConfigError, match="questions"):
        audit_vlm(vlm, processor, delta, target, questions=[""])
    with pytest.raises(ConfigError, match="ConceptDelta"):
        audit_vlm(vlm, processor, [], target)
    with pytest.raises(ConfigError, match="wrap the audited model"):
        audit_vlm(vlm, processor, SLUGModel(torch.nn.Linear(2, 2)), target)
    with pytest.raises(ConfigError, match="budget"):
        audit_vlm(vlm, processor, delta, target, budget="thorough")


@pytest.mark.numerics
def test_pipeline_every_phrasing_finds_the_concept_in_the_original(pipeline_setup):
    pipe, delta, target, judge, judge_processor = pipeline_setup
    report = audit_pipeline(pipe, delta, target, judge, judge_processor, budget=PIPELINE_BUDGET)
    assert report.broken_probes() == []  # original ≥ 50 %; chance is 1/26
    families = [r.family for r in report.rows]
    assert families.count("generation (criterion phrasing)") == 2
    assert families.count("generation (held-out phrasing)") == 2
    assert families.count("generation (name variant)") == 3
    assert families[-1] == "generation (any prompt)"
    assert all(r.edited is not None and r.original is not None for r in report.rows)
    assert report.settings["judge_on_views"] >= 0.75
    assert report.settings["deltas"] == [delta.digest()]


def test_pipeline_bad_inputs_raise_typed_errors(pipeline_setup):
    pipe, delta, target, judge, judge_processor = pipeline_setup
    no_encoder = types.SimpleNamespace(components={"unet": object(), "text_encoder": None})
    with pytest.raises(UnsupportedModelError, match="no text encoder"):
        audit_pipeline(no_encoder, delta, target, judge, judge_processor)
    with pytest.raises(UnsupportedModelError, match="diffusers pipeline"):
        audit_pipeline(torch.nn.Linear(2, 2), delta, target, judge, judge_processor)
    with pytest.raises(UnsupportedModelError, match="CLIP"):
        audit_pipeline(pipe, delta, target, pipe.text_encoder, judge_processor)
    shared = copy.deepcopy(judge)
    shared.text_model.embeddings.token_embedding = pipe.text_encoder.get_input_embeddings()
    with pytest.raises(ConfigError, match="shares weights"):
        audit_pipeline(pipe, delta, target, shared, judge_processor)
    absent = AuditTarget("Nobody Known", target.names, target.images)
    with pytest.raises(ConfigError, match="not among"):
        audit_pipeline(pipe, delta, absent, judge, judge_processor)
    with pytest.raises(ConfigError, match="seed"):
        audit_pipeline(pipe, delta, target, judge, judge_processor, seeds=[])
    with pytest.raises(ConfigError, match="one '{}'"):
        audit_pipeline(pipe, delta, target, judge, judge_processor, phrasings=["no slot"])
    reserved = HostAuditBudget(generation_kwargs={"generator": None})
    with pytest.raises(ConfigError, match="generator"):
        audit_pipeline(pipe, delta, target, judge, judge_processor, budget=reserved)


def test_cli_vlm_mode_writes_the_report_beside_the_delta_and_the_card_shows_it(vlm_setup, tmp_path):
    from hf_slug.cli import main
    from hf_slug.hub import model_card

    vlm, processor, delta, target = vlm_setup
    folder = delta.save_pretrained(tmp_path / "clara_vlm")
    assert main(["audit", str(folder), "--vlm", "--quick"]) == 0
    report = AuditReport.from_pretrained(folder)
    assert report.rows[-1].setting == "any paraphrase (per view)"
    assert report.settings["deltas"] == [delta.digest()]
    assert "question paraphrase" in model_card(folder)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--vlm", "--pipeline"], "not allowed with"),
        (["--pipeline", "--model", "{folder}"], "needs --judge"),
    ],
    ids=["both-hosts", "pipeline-model-without-judge"],
)
def test_cli_host_usage_errors_exit_2(vlm_setup, tmp_path, capsys, extra, words):
    from hf_slug.cli import main

    folder = vlm_setup[2].save_pretrained(tmp_path / "clara_vlm")
    extra = [e.replace("{folder}", str(tmp_path)) for e in extra]
    assert main(["audit", str(folder), *extra]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
