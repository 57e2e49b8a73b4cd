"""Every command-line tool against a corpus of bad inputs: each must stop with exit status 2, exactly one
``error:`` line, no traceback, and leave everything already on disk as it was.

The tools run in this process (their ``main(argv)``, stdout and stderr captured), so TensorFlow is imported
once for the whole table; only Ctrl-C needs a child process. All cases share one ``world`` directory of good
and bad inputs, built once; its files are hashed before and after every case.

Adding a case is one line in CASES: ``Case(id, cli, arguments)``, or ``Case(id, cli, arguments, expect)`` when
the error line must contain ``expect`` (a check another error would pass). In the arguments ``{w}`` is the world
directory and ``{out}`` a fresh directory that does not exist yet; put new input files in ``build_world``.
"""
import collections
import contextlib
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback

import pytest

from tests.conftest import ROOT

TINY = ROOT / "tf_mrc" / "resources" / "tiny"
TINY_FLAGS = ("--task=cmrc2018 --model=tiny --vocab_file={w}/vocab.txt --max_seq_length=128 --doc_stride=32 "
              "--max_query_length=32")
TRAIN = TINY_FLAGS + " --train_file={w}/passages.json --do_train"   # a later flag of the same name wins

Case = collections.namedtuple("Case", "id cli args expect", defaults=(None,))

CASES = [
    # tf_mrc.evaluate: data files
    Case("eval-duplicate-id-7-and-'7'", "evaluate", "--task=cmrc2018 {w}/dup_ids.json {w}/predictions.json"),
    Case("eval-null-id", "evaluate", "--task=cmrc2018 {w}/null_id.json {w}/predictions.json"),
    Case("eval-invisible-passage", "evaluate", "--task=cmrc2018 {w}/blank_passage.json {w}/predictions.json"),
    Case("eval-empty-data", "evaluate", "--task=cmrc2018 {w}/empty_data.json {w}/predictions.json"),
    Case("eval-gold-without-answers", "evaluate", "--task=cmrc2018 {w}/no_answers.json {w}/predictions.json"),
    Case("eval-data-is-a-directory", "evaluate", "--task=cmrc2018 {w}/a_directory {w}/predictions.json"),
    Case("eval-data-missing", "evaluate", "--task=cmrc2018 {w}/nothing.json {w}/predictions.json"),
    Case("eval-data-bad-json", "evaluate", "--task=cmrc2018 {w}/broken.json {w}/predictions.json"),
    Case("eval-answer-start-true", "evaluate", "--task=cmrc2018 {w}/answer_start_true.json {w}/predictions.json",
         "answer_start"),
    Case("eval-answer-start-text", "evaluate", "--task=cmrc2018 {w}/answer_start_text.json {w}/predictions.json",
         "answer_start"),
    Case("eval-drcd-duplicate-id", "evaluate", "--task=drcd {w}/dup_ids.json {w}/predictions.json"),
    Case("eval-cjrc-duplicate-id", "evaluate", "--task=cjrc {w}/cjrc_dup_ids.json {w}/predictions.json"),
    Case("eval-chid-fewclue-duplicate-id", "evaluate", "--task=chid {w}/chid_dup_ids.json {w}/chid_predictions.json"),
    Case("eval-chid-fewclue-null-id", "evaluate", "--task=chid {w}/chid_null_id.json {w}/chid_predictions.json"),
    Case("eval-chid-duplicate-blank", "evaluate", "--task=chid {w}/chid_dup_blanks.json {w}/chid_predictions.json"),
    Case("eval-c3-duplicate-id", "evaluate", "--task=c3 {w}/c3_dup_ids.json {w}/c3_predictions.json"),
    Case("eval-c3-null-id", "evaluate", "--task=c3 {w}/c3_null_id.json {w}/c3_predictions.json"),
    Case("eval-c3-invisible-passage", "evaluate", "--task=c3 {w}/c3_blank.json {w}/c3_predictions.json"),
    Case("eval-lone-surrogate-in-passage", "evaluate", "--task=cmrc2018 {w}/lone_surrogate.json "
                                                       "{w}/predictions.json"),
    Case("eval-chid-lone-surrogate", "evaluate", "--task=chid {w}/chid_lone_surrogate.json {w}/chid_predictions.json"),
    Case("eval-c3-subset-file-missing", "evaluate", "--task=c3 --c3_subsets=d,m {w}/c3-d-dev.json "
                                                    "{w}/c3_predictions.json"),
    Case("eval-two-documents-concatenated", "evaluate", "--task=cmrc2018 {w}/concatenated.json {w}/predictions.json",
         "Extra data"),
    Case("eval-c3-document-id-null", "evaluate", "--task=c3 {w}/c3_doc_id_null.json {w}/c3_predictions.json",
         "document id"),
    Case("eval-c3-answer-not-text", "evaluate", "--task=c3 {w}/c3_answer_0.json {w}/c3_predictions.json",
         "questions[0].answer"),
    # tf_mrc.evaluate: predictions files
    Case("eval-nbest-file", "evaluate", "--task=cmrc2018 {w}/passages.json {w}/nbest_predictions.json"),
    Case("eval-data-file-as-predictions", "evaluate", "--task=cmrc2018 {w}/passages.json {w}/passages.json"),
    Case("eval-predictions-of-another-file", "evaluate", "--task=cmrc2018 {w}/passages.json {w}/foreign.json"),
    Case("eval-predictions-directory", "evaluate", "--task=cmrc2018 {w}/passages.json {w}/a_directory"),
    Case("eval-c3-nbest-file", "evaluate", "--task=c3 {w}/c3-d-dev.json {w}/c3_nbest.json"),
    Case("eval-chid-index-outside-candidates", "evaluate", "--task=chid {w}/chid_one.json {w}/chid_index_-1.json",
         "question 7"),
    Case("eval-c3-index-outside-choices", "evaluate", "--task=c3 {w}/c3-d-dev.json {w}/c3_index_2.json",
         "question d-doc1-0"),
    # tf_mrc.audit
    Case("audit-duplicate-id", "audit", "--task=cmrc2018 --data {w}/dup_ids.json --vocab_file {w}/vocab.txt"),
    Case("audit-empty-data", "audit", "--task=cmrc2018 --data {w}/empty_data.json --vocab_file {w}/vocab.txt"),
    Case("audit-data-is-a-directory", "audit", "--task=cmrc2018 --data {w}/a_directory --vocab_file {w}/vocab.txt"),
    Case("audit-invisible-passage", "audit", "--task=cmrc2018 --data {w}/blank_passage.json "
                                             "--vocab_file {w}/vocab.txt"),
    Case("audit-lone-surrogate-in-passage", "audit", "--task=cmrc2018 --data {w}/lone_surrogate.json "
                                                     "--vocab_file {w}/vocab.txt"),
    Case("audit-vocab-not-utf8", "audit", "--task=cmrc2018 --data {w}/passages.json --vocab_file {w}/vocab_utf16.txt"),
    Case("audit-doc-stride-0", "audit", "--task=cmrc2018 --data {w}/passages.json --vocab_file {w}/vocab.txt "
                                        "--max_seq_length 32 --doc_stride 0"),
    Case("audit-max-seq-length-negative", "audit", "--task=cmrc2018 --data {w}/passages.json --vocab_file "
                                                   "{w}/vocab.txt --max_seq_length -1"),
    Case("audit-max-seq-length-below-question", "audit", "--task=cmrc2018 --data {w}/passages.json --vocab_file "
                                                         "{w}/vocab.txt --max_seq_length 10"),
    Case("audit-answer-start-true", "audit", "--task=cmrc2018 --data {w}/answer_start_true.json --vocab_file "
                                             "{w}/vocab.txt", "answer_start"),
    Case("audit-vocab-missing", "audit", "--task=cmrc2018 --data {w}/passages.json --vocab_file {w}/nothing.txt"),
    Case("audit-bad-opencc-config", "audit", "--task=drcd --opencc_config=no_such --data {w}/passages.json "
                                             "--vocab_file {w}/vocab.txt"),
    # run_finetune.py
    Case("run-output-dir-is-a-file", "run_finetune", TRAIN + " --output_dir={w}/a_file"),
    Case("run-output-dir-not-creatable", "run_finetune", TRAIN + " --output_dir={w}/a_file/sub"),
    Case("run-output-dir-not-writable", "run_finetune", TRAIN + " --output_dir=/proc/tf_mrc_fuzz"),
    Case("run-cache-dir-not-writable", "run_finetune", TRAIN + " --cache_dir=/proc/tf_mrc_fuzz --output_dir={out}"),
    Case("run-restart-vocab", "run_finetune", TRAIN + " --vocab_file={w}/vocab_more.txt --output_dir={w}/run"),
    Case("run-restart-other-casing", "run_finetune", TRAIN + " --nolower_case --output_dir={w}/run"),
    Case("run-restart-config", "run_finetune", TRAIN + " --config_file={w}/other_config.json --output_dir={w}/run"),
    Case("run-resume-bit-flipped-checkpoint", "run_finetune", TRAIN + " --output_dir={w}/run_flipped"),
    Case("run-init-checkpoint-of-another-model", "run_finetune",
         TRAIN + " --init_checkpoint={w}/other_model/model.ckpt --output_dir={out}"),
    Case("run-init-ckpt-truncated", "run_finetune", TRAIN + " --init_checkpoint={w}/run_truncated --output_dir={out}"),
    Case("run-init-ckpt-flipped", "run_finetune", TRAIN + " --init_checkpoint={w}/run_flipped --output_dir={out}"),
    Case("run-dev-file-without-answers", "run_finetune",
         TINY_FLAGS + " --dev_file={w}/no_answers.json --do_eval --init_checkpoint={w}/run --output_dir={out}"),
    Case("run-predict-with-untrained-head", "run_finetune",
         TINY_FLAGS + " --dev_file={w}/passages.json --do_predict --init_checkpoint={w}/encoder_only/model.ckpt "
                      "--output_dir={out}"),
    Case("run-train-file-empty-data", "run_finetune", TRAIN + " --train_file={w}/empty_data.json --output_dir={out}"),
    Case("run-train-file-duplicate-id", "run_finetune", TRAIN + " --train_file={w}/dup_ids.json --output_dir={out}"),
    Case("run-train-file-answers-unaligned", "run_finetune", TRAIN + " --train_file={w}/unaligned.json "
                                                                    "--output_dir={out}", "\"unaligned\": 2"),
    Case("run-train-file-missing", "run_finetune", TRAIN + " --train_file={w}/nothing.json --output_dir={out}"),
    Case("run-train-file-two-documents-concatenated", "run_finetune",
         TRAIN + " --train_file={w}/concatenated.json --output_dir={out}", "Extra data"),
    Case("run-learning-rate-diverges", "run_finetune", TRAIN + " --learning_rate=1e30 --max_train_steps=3 "
                                                              "--output_dir={out}", "training diverged"),
    Case("run-vocab-not-wordpiece", "run_finetune", TRAIN + " --vocab_file={w}/broken.json --output_dir={out}"),
    Case("run-config-not-utf8", "run_finetune", TRAIN + " --config_file={w}/config_utf16.json --output_dir={out}",
         "config_utf16.json"),
    Case("run-config-is-a-directory", "run_finetune", TRAIN + " --config_file={w}/a_directory --output_dir={out}",
         "a_directory"),
    Case("run-nothing-to-do", "run_finetune", TINY_FLAGS + " --output_dir={out}"),
    # run_finetune.py: every numeric flag and choice, checked before any work
    Case("run-doc-stride-0", "run_finetune", TRAIN + " --doc_stride=0 --output_dir={out}"),
    Case("run-doc-stride-negative", "run_finetune", TRAIN + " --doc_stride=-5 --output_dir={out}"),
    Case("run-train-batch-0", "run_finetune", TRAIN + " --train_batch_size=0 --output_dir={out}"),
    Case("run-predict-batch-negative", "run_finetune", TRAIN + " --predict_batch_size=-1 --do_eval --output_dir={out}"),
    Case("run-max-seq-too-short-for-question", "run_finetune", TRAIN + " --max_seq_length=34 --output_dir={out}"),
    Case("run-max-seq-over-positions", "run_finetune", TRAIN + " --max_seq_length=256 --output_dir={out}"),
    Case("run-seeds-0", "run_finetune", TRAIN + " --seeds=0 --output_dir={out}"),
    Case("run-save-checkpoints-steps-0", "run_finetune", TRAIN + " --save_checkpoints_steps=0 --output_dir={out}"),
    Case("run-max-train-steps-0", "run_finetune", TRAIN + " --max_train_steps=0 --output_dir={out}"),
    Case("run-negative-epochs", "run_finetune", TRAIN + " --num_train_epochs=-1 --output_dir={out}"),
    Case("run-epochs-infinite", "run_finetune", TRAIN + " --num_train_epochs=inf --output_dir={out}",
         "--num_train_epochs"),
    Case("run-n-best-0", "run_finetune", TRAIN + " --n_best_size=0 --output_dir={out}"),
    Case("run-warmup-over-1", "run_finetune", TRAIN + " --warmup_proportion=1.5 --output_dir={out}"),
    Case("run-precision-fp8", "run_finetune", TRAIN + " --precision=fp8 --output_dir={out}"),
    Case("run-option-of-another-task", "run_finetune", TRAIN + " --c3_subsets=d --output_dir={out}"),
    Case("run-unknown-task", "run_finetune", TRAIN + " --task=squad --output_dir={out}"),
    # export.to_pb
    Case("to_pb-bit-flipped-checkpoint", "to_pb", "--output_dir {w}/run_flipped --output {out}/model.pb"),
    Case("to_pb-truncated-checkpoint", "to_pb", "--output_dir {w}/run_truncated --output {out}/model.pb"),
    Case("to_pb-output-is-a-directory", "to_pb", "--output_dir {w}/run --output {w}/a_directory"),
    Case("to_pb-output-not-writable", "to_pb", "--output_dir {w}/run --output /proc/tf_mrc_fuzz/model.pb"),
    Case("to_pb-flags-unused-with-output-dir", "to_pb", "--output_dir {w}/run --output {out}/model.pb --task=c3 "
                                                        "--n_best_size=5"),
    Case("to_pb-config-not-utf8", "to_pb", "--checkpoint {w}/run/model.ckpt-1 --config {w}/config_utf16.json "
                                           "--task=cmrc2018 --vocab_file {w}/vocab.txt --max_seq_length 128 "
                                           "--output {out}/model.pb", "config_utf16.json"),
    Case("to_pb-not-a-run", "to_pb", "--output_dir {w}/a_directory --output {out}/model.pb"),
    Case("to_pb-doc-stride-0", "to_pb", "--checkpoint {w}/run --config {w}/tiny_config.json --task cmrc2018 "
                                        "--max_seq_length 128 --doc_stride 0 --output {out}/model.pb"),
    Case("to_pb-config-with-fewer-layers", "to_pb", "--checkpoint {w}/run --config {w}/one_layer_config.json "
                                                    "--task cmrc2018 --vocab_file {w}/vocab.txt --max_seq_length 128 "
                                                    "--output {out}/model.pb", "layers the model lacks"),
    Case("to_pb-config-negative-size", "to_pb", "--checkpoint {w}/run --config {w}/negative_config.json "
                                                "--task cmrc2018 --vocab_file {w}/vocab.txt --max_seq_length 128 "
                                                "--output {out}/model.pb", "hidden_size"),
    Case("to_pb-checkpoint-directory-without-one", "to_pb", "--checkpoint {w}/a_directory --config "
                                                            "{w}/tiny_config.json --task cmrc2018 --max_seq_length 128 "
                                                            "--output {out}/model.pb", "a_directory holds no checkpoint"),
    # export.to_pytorch
    Case("to_pytorch-truncated-checkpoint", "to_pytorch", "--checkpoint {w}/run_truncated --config "
                                                          "{w}/tiny_config.json --output {out}"),
    Case("to_pytorch-bit-flipped-checkpoint", "to_pytorch", "--checkpoint {w}/run_flipped --config "
                                                            "{w}/tiny_config.json --output {out}"),
    Case("to_pytorch-output-is-a-file", "to_pytorch", "--checkpoint {w}/run --config {w}/tiny_config.json --output "
                                                      "{w}/a_file"),
    Case("to_pytorch-output-not-writable", "to_pytorch", "--checkpoint {w}/run --config {w}/tiny_config.json "
                                                         "--output /proc/tf_mrc_fuzz"),
    Case("to_pytorch-vocab-missing", "to_pytorch", "--checkpoint {w}/run --config {w}/tiny_config.json --output {out} "
                                                   "--vocab_file {w}/nothing.txt"),
    Case("to_pytorch-config-not-utf8", "to_pytorch", "--checkpoint {w}/run --config {w}/config_utf16.json "
                                                     "--output {out}", "config_utf16.json"),
    Case("to_pytorch-no-checkpoint", "to_pytorch", "--checkpoint {w}/a_directory --config {w}/tiny_config.json "
                                                   "--output {out}"),
    # export.from_pytorch
    Case("from_pytorch-not-weights", "from_pytorch", "--pytorch {w}/broken.json --config {w}/tiny_config.json "
                                                     "--output {out}/model.ckpt"),
    Case("from_pytorch-directory-without-weights", "from_pytorch", "--pytorch {w}/a_directory --config "
                                                                   "{w}/tiny_config.json --output {out}/model.ckpt"),
    # serving_demo
    Case("demo-corrupt-pb", "serving_demo", "--pb {w}/corrupt.pb --passage 文 --question 问"),
    Case("demo-truncated-pb", "serving_demo", "--pb {w}/truncated.pb --passage 文 --question 问"),
    Case("demo-no-sidecar", "serving_demo", "--pb {w}/passages.json --passage 文 --question 问"),
    # serving_demo: flags checked before the graph loads (corrupt.pb would be refused after them)
    Case("demo-port-negative", "serving_demo", "--pb {w}/corrupt.pb --serve -1", "0-65535"),
    Case("demo-port-above-65535", "serving_demo", "--pb {w}/corrupt.pb --serve 99999", "0-65535"),
    Case("demo-batch-window-infinite", "serving_demo", "--pb {w}/corrupt.pb --serve 0 --batch_window_ms inf",
         "--batch_window_ms"),
    Case("demo-batch-window-nan", "serving_demo", "--pb {w}/corrupt.pb --serve 0 --batch_window_ms nan",
         "--batch_window_ms"),
    Case("demo-output-is-a-directory", "serving_demo", "--pb {w}/corrupt.pb --output {w}/a_directory", "--output"),
    Case("demo-output-not-writable", "serving_demo", "--pb {w}/corrupt.pb --output /proc/tf_mrc_fuzz/p.json",
         "--output"),
    Case("demo-blank-passage", "serving_demo", "--pb {w}/corrupt.pb --passage ' \u200b' --question 问", "--passage"),
]


def _question(qid, question="问", answer="文"):
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": 1}] if answer else []}


def _squad(qas, context="有文", **article):
    return {"data": [dict(article, paragraphs=[{"context": context, "qas": qas}])]}


def _fewclue(qid):
    return {"id": qid, "candidates": ["一二三四", "五六七八"], "content": "甲#idiom#乙", "answer": 0}


def _c3(questions, sentences=("甲乙",)):
    return [[list(sentences), questions, "doc1"]]


def _c3_question(qid=None):
    question = {"question": "问", "choice": ["甲", "乙"], "answer": "甲"}
    if qid != "absent":
        question["id"] = qid
    return question


def _write(path, obj):
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")


def _damage(run_dir, how):
    """Truncate or flip one bit in the middle of the latest checkpoint's .data file."""
    from tf_mrc.compat import tf
    data = tf.train.latest_checkpoint(str(run_dir)) + ".data-00000-of-00001"
    content = bytearray(open(data, "rb").read())
    if how == "truncate":
        content = content[:len(content) // 2]
    else:
        content[len(content) // 2] ^= 0x01
    open(data, "wb").write(bytes(content))


def build_world(w):
    """The shared inputs: good files, one bad file per problem, a trained tiny run and damaged copies of it."""
    from tf_mrc import experiment
    from tf_mrc.compat import tf
    shutil.copy(str(TINY / "vocab.txt"), str(w / "vocab.txt"))
    shutil.copy(str(TINY / "passages.json"), str(w / "passages.json"))
    vocab = (TINY / "vocab.txt").read_text(encoding="utf-8")
    _write(w / "vocab_more.txt", vocab + "额外一\n额外二\n")
    (w / "vocab_utf16.txt").write_bytes(vocab.encode("utf-16"))
    (w / "a_directory").mkdir()
    _write(w / "a_file", "not a directory\n")
    _write(w / "broken.json", '{"data": [')
    passages = json.loads((TINY / "passages.json").read_text(encoding="utf-8"))
    qids = [qa["id"] for a in passages["data"] for p in a["paragraphs"] for qa in p["qas"]]
    _write(w / "predictions.json", {qid: "文" for qid in qids + ["7", "q", "c1", "c2"]})
    _write(w / "nbest_predictions.json", {qid: [{"text": "文", "probability": 1.0}] for qid in qids})
    _write(w / "foreign.json", {"other-%d" % k: "文" for k in range(3)})
    _write(w / "dup_ids.json", _squad([_question(7), _question("7")]))
    _write(w / "cjrc_dup_ids.json", _squad([_question(7), _question("7")], domain="civil"))
    _write(w / "null_id.json", _squad([_question(None)]))
    _write(w / "blank_passage.json", _squad([_question("q")], context=" \u200b\u200d\ufeff\n"))
    _write(w / "empty_data.json", {"data": []})
    _write(w / "concatenated.json", "".join(json.dumps(_squad([_question(qid)])) + "\n" for qid in ("c1", "c2")))
    _write(w / "unaligned.json", _squad([_question("q1", answer="湖"), _question("q2", answer="山")]))
    _write(w / "lone_surrogate.json", json.dumps(_squad([_question("q")], context="有\ud800文")))
    _write(w / "no_answers.json", _squad([_question("q", answer=None)]))
    for name, start in (("answer_start_true.json", True), ("answer_start_text.json", "1")):
        _write(w / name, _squad([dict(_question("q"), answers=[{"text": "文", "answer_start": start}])]))
    lines = lambda records: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)  # noqa: E731
    _write(w / "chid_dup_ids.json", lines([_fewclue(7), _fewclue("7")]))
    _write(w / "chid_null_id.json", lines([_fewclue(None)]))
    _write(w / "chid_lone_surrogate.json", json.dumps(dict(_fewclue(7), content="甲#idiom#\udc00")) + "\n")
    chid_line = {"content": ["甲#idiom000001#乙"], "candidates": ["一二三四", "五六七八"]}
    _write(w / "chid_dup_blanks.json", lines([chid_line, chid_line]))
    _write(w / "chid_dup_blanks_answer.json", {"#idiom000001#": 0})
    _write(w / "chid_predictions.json", {"7": 0})
    _write(w / "chid_one.json", lines([_fewclue(7)]))
    _write(w / "chid_index_-1.json", {"7": -1})
    _write(w / "c3_dup_ids.json", _c3([_c3_question(5), _c3_question("5")]))
    _write(w / "c3_null_id.json", _c3([_c3_question(None)]))
    _write(w / "c3_blank.json", _c3([_c3_question("absent")], sentences=["\u200b", " "]))
    _write(w / "c3-d-dev.json", _c3([_c3_question("absent")]))
    _write(w / "c3_doc_id_null.json", [[["甲乙"], [_c3_question("absent")], None]])
    _write(w / "c3_answer_0.json", [[["甲乙"], [dict(_c3_question("absent"), answer=0)], "doc1"]])
    _write(w / "c3_predictions.json", {"d-doc1-0": "甲"})
    _write(w / "c3_index_2.json", {"d-doc1-0": 2})
    _write(w / "c3_nbest.json", {"d-doc1-0": [{"index": 0, "text": "甲", "probability": 1.0}]})
    _write(w / "corrupt.pb", "\x08\x96\x01 not a graph")
    _write(w / "truncated.pb", "\n\x80\x80\x80")
    sidecar = {"task": "cmrc2018", "layout": "bert", "vocab_file": "vocab.txt", "spm_model": None,
               "lower_case": None, "feature_settings": {"max_seq_length": 128}}
    for name in ("corrupt.pb", "truncated.pb"):
        _write(w / (name + ".json"), sidecar)

    # a trained tiny run (one step), and copies whose checkpoint data is damaged
    spec = experiment.embedded_default(str(w / "run"))
    spec.train_file = str(w / "passages.json")
    spec.vocab_file = str(w / "vocab.txt")
    spec.do_eval = spec.do_predict = False
    spec.max_train_steps = 1
    experiment.run(spec, log=lambda line: None)
    shutil.rmtree(str(w / "run" / "cache"))
    stored = json.loads((w / "run" / "run_config.json").read_text(encoding="utf-8"))
    _write(w / "tiny_config.json", stored["model_config"])
    _write(w / "other_config.json", dict(stored["model_config"], intermediate_size=96))
    _write(w / "one_layer_config.json", dict(stored["model_config"], num_hidden_layers=1))
    _write(w / "negative_config.json", dict(stored["model_config"], hidden_size=-64))
    (w / "config_utf16.json").write_bytes(json.dumps(stored["model_config"]).encode("utf-16"))
    for name, how in (("run_truncated", "truncate"), ("run_flipped", "flip")):
        shutil.copytree(str(w / "run"), str(w / name))
        _damage(w / name, how)
    from export.from_pytorch import write_tf_checkpoint
    reader = tf.train.load_checkpoint(str(w / "run"))
    write_tf_checkpoint({name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
                         if name.startswith("bert/")}, str(w / "encoder_only" / "model.ckpt"))
    with tf.Graph().as_default():
        tf.get_variable("other_model/dense/kernel", [2, 2])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, str(w / "other_model" / "model.ckpt"))


def _tree_hashes(root):
    hashes = {}
    for directory, _, files in os.walk(str(root)):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                hashes[os.path.relpath(path, str(root))] = hashlib.sha1(f.read()).hexdigest()
    return hashes


def _main_of(cli):
    if cli == "run_finetune":
        return _run_finetune
    module = {"evaluate": "tf_mrc.evaluate", "audit": "tf_mrc.audit", "to_pb": "export.to_pb",
              "to_pytorch": "export.to_pytorch", "from_pytorch": "export.from_pytorch",
              "serving_demo": "serving_demo.__main__"}[cli]
    return __import__(module, fromlist=["main"]).main


def _run_finetune(argv):
    """run_finetune.py's main as absl's app.run calls it, flags parsed afresh."""
    import run_finetune
    from absl import flags
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["run_finetune.py"] + argv)
    saved, sys.argv = sys.argv, ["run_finetune.py"] + argv
    try:
        return run_finetune.main(["run_finetune.py"])
    finally:
        sys.argv = saved


def run_cli(cli, argv):
    """(exit status, stdout, stderr) of one tool run in this process; an uncaught exception is reported as
    status 'exception' with its traceback on stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            returned = _main_of(cli)(argv)
            status = returned or 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:  # noqa: B902 - a tool must never let one escape
            status = "exception"
            err.write(traceback.format_exc())
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    build_world(w)
    return w


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(world, tmp_path, case):
    argv = shlex.split(case.args.format(w=world, out=tmp_path / "out"))
    before = _tree_hashes(world)
    status, out, err = run_cli(case.cli, argv)
    after = _tree_hashes(world)
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    assert "Traceback" not in out + err, err
    assert status == 2 and len(errors) == 1, (status, out, err)
    assert case.expect is None or case.expect in errors[0], errors[0]
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not changed, "changed or removed: %s" % changed


def test_cli_table_covers_every_tool():
    assert {case.cli for case in CASES} == {"evaluate", "audit", "run_finetune", "to_pb", "to_pytorch",
                                            "from_pytorch", "serving_demo"}
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_interrupt_names_the_last_checkpoint(tmp_path, signum, status):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's kill) while training: one line naming the last checkpoint and how
    to resume, exit status 128 + the signal. Progress lines reach a redirected stdout (a log file) as they
    happen, not when the process ends."""
    out = tmp_path / "out"
    flags = TINY_FLAGS.format(w=TINY) + " --train_file=%s --do_train --max_train_steps=100000 " \
                                        "--save_checkpoints_steps=5 --log_every=100000 --output_dir=%s" % (
                                            TINY / "passages.json", out)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONUNBUFFERED", None)
    log = tmp_path / "stdout.log"
    with open(str(log), "w") as stdout_file:
        # A test run started in the background by a non-interactive shell (as CI may be) inherits SIGINT ignored,
        # and Python keeps an ignored SIGINT ignored: the child gets the default disposition back, as a terminal's
        # process has it.
        child = subprocess.Popen([sys.executable, str(ROOT / "run_finetune.py")] + shlex.split(flags), env=env,
                                 stdout=stdout_file, stderr=subprocess.PIPE, universal_newlines=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint").exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert child.poll() is None, child.communicate()
        time.sleep(1.0)
        logged_while_running = log.read_text()
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=180)
    finally:
        if child.poll() is None:
            child.kill()
    stdout = log.read_text()
    assert "[train] " in logged_while_running, stdout
    assert child.returncode == status, (stdout, stderr)
    assert "Traceback" not in stdout + stderr, stderr
    from tf_mrc.compat import tf
    latest = tf.train.latest_checkpoint(str(out))
    expected = "interrupted: the last checkpoint is %s; run the same command again to resume from it" % latest
    assert stderr.strip().splitlines()[-1] == expected, stderr


def test_byte_order_mark_and_crlf_files_score_as_plain_utf8(tmp_path):
    """Windows editors save UTF-8 with a byte-order mark and CRLF line ends: such data and predictions files
    (JSON and JSON lines) read as the plain files do."""
    passages = (TINY / "passages.json").read_text(encoding="utf-8")
    qids = [qa["id"] for a in json.loads(passages)["data"] for p in a["paragraphs"] for qa in p["qas"]]
    predictions = json.dumps({qid: "西湖" for qid in qids}, ensure_ascii=False, indent=1)
    fewclue = json.dumps(_fewclue("7"), ensure_ascii=False) + "\n"
    for name, text in (("data.json", passages), ("predictions.json", predictions), ("chid.json", fewclue * 1),
                       ("chid_predictions.json", '{"7": 0}')):
        _write(tmp_path / name, text)
        (tmp_path / ("bom_" + name)).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    for task, data, predictions in (("cmrc2018", "data.json", "predictions.json"),
                                    ("chid", "chid.json", "chid_predictions.json")):
        plain = run_cli("evaluate", ["--task=" + task, str(tmp_path / data), str(tmp_path / predictions)])
        marked = run_cli("evaluate", ["--task=" + task, str(tmp_path / ("bom_" + data)),
                                      str(tmp_path / ("bom_" + predictions))])
        assert plain[0] == 0 and marked == plain, (plain, marked)


def test_config_with_byte_order_mark_reads_as_plain(tmp_path):
    """A model config saved by a Windows editor (UTF-8 with a byte-order mark) reads as the plain file does."""
    from tf_mrc.modeling.config import config_from_json
    text = json.dumps({"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 99})
    _write(tmp_path / "plain.json", text)
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    plain = config_from_json(str(tmp_path / "plain.json"))
    assert plain.vocab_size == 99
    assert config_from_json(str(tmp_path / "bom.json")) == plain
