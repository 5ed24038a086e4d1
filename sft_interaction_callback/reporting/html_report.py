"""A single self-contained HTML page for one run: summary, charts and the probes' interactions.

The page has no external asset and needs no server: the charts are inline SVG (a few KB
each, where a base64 PNG weighs ~100 KB; each chart appears once, the PNG files beside
the page are linked, not embedded), the per-step probe data is an inline JSON block, and
the few lines of CSS and JavaScript are inline, so it opens offline and can be mailed as
it is. All user text (prompts, targets, probe ids, stop reasons, paths) is HTML-escaped.

Each probe has a step slider: its strongest AND / OR / removed interactions and the
colour of its words (how strongly each takes part in salient interactions) at every
probed step. Hovering (or focusing, or clicking to pin) an interaction row highlights its
words in the prompt. Without JavaScript the stop (or last) step is shown, words listed
as chips.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from ..keys import CATEGORIES, NOISE_KEY, REMOVED_FRACTION_KEY, TOTAL_STRENGTH_KEY, category_key
from .probe_steps import probe_step_data, word_strengths
from .run_data import Interaction, ProbeInfo, RunData
from .svg_charts import CHARTS

__all__ = ["render_html"]

_TAG = {"removed": "removed", "preserved": "preserved", "emerged": "new", "salient": "salient"}

_CSS = """
:root{--removed:#d62728;--preserved:#1f77b4;--emerged:#2ca02c;--muted:#667;--line:#dde;
--bg-removed:#fbdada;--bg-preserved:#d6e6f5;--bg-emerged:#d5f0d0;--bg-salient:#eee}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d28;
margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 20px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 12px;border-bottom:1px solid
var(--line);padding-bottom:4px}h3{font-size:16px;margin:0 0 8px}h4{font-size:13px;margin:0 0 6px;
text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.sub{color:var(--muted);margin:0;word-break:break-all}
nav a{margin-right:14px;color:#335}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 16px;
margin:12px 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
table{border-collapse:collapse}
table.metrics td,table.metrics th{padding:4px 12px;border-bottom:1px solid var(--line);
text-align:right}
table.metrics th:first-child,table.metrics td:first-child{text-align:left}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px}
.dot.removed{background:var(--removed)}.dot.preserved{background:var(--preserved)}
.dot.emerged{background:var(--emerged)}
.notes{color:#7a5a00;background:#fff8e1;border-color:#f0dc9a}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:16px}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px}
figure svg{display:block;font:11px system-ui,sans-serif;fill:#334}
figure svg polyline,figure svg line{fill:none}
.stepper{display:flex;align-items:center;gap:10px;margin:6px 0 10px;font-size:13px}
.stepper input{flex:1;max-width:420px}.step-label{font-weight:600;min-width:9em}
figcaption{color:var(--muted);font-size:13px;margin-top:6px}
.prompt{white-space:pre-wrap;word-wrap:break-word;font:14px/1.7 ui-monospace,SFMono-Regular,Menlo,
Consolas,monospace;background:#fafbfc;border:1px solid var(--line);border-radius:6px;padding:10px;
max-height:18em;overflow:auto}
.pl{border-bottom:2px solid #99a;background:rgba(255,140,0,calc(.08 + .62 * var(--w,0)));
border-radius:3px;padding:0 1px;transition:background .1s,opacity .1s}
.probe.focus .pl{opacity:.45}
.probe.focus .pl.hl{opacity:1;font-weight:700}
.pl.hl[data-cat=removed]{background:var(--bg-removed);border-color:var(--removed)}
.pl.hl[data-cat=preserved]{background:var(--bg-preserved);border-color:var(--preserved)}
.pl.hl[data-cat=emerged]{background:var(--bg-emerged);border-color:var(--emerged)}
.pl.hl[data-cat=salient]{background:#ffe9a8;border-color:#b08900}
details.target{margin:6px 0 10px;color:var(--muted);font-size:13px}
details.target pre{white-space:pre-wrap;margin:4px 0 0;color:#1d1d28}
.ix-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px}
table.ix{width:100%;font-size:13px}
table.ix td{padding:3px 6px;border-bottom:1px solid #eef;vertical-align:top}
table.ix td.tagcell{white-space:nowrap;width:1%}
table.ix td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.ix-row{cursor:pointer;outline:none}
tr.ix-row:hover,tr.ix-row:focus,tr.ix-row.active{background:#f1f3f8}
tr.ix-row.pinned{background:#e6e9f2}
.tag{display:inline-block;font-size:11px;border-radius:9px;padding:0 7px;color:#fff;
white-space:nowrap}
.tag.removed{background:var(--removed)}.tag.preserved{background:var(--preserved)}
.tag.emerged{background:var(--emerged)}.tag.salient{background:#888}
.chip{display:inline-block;border-radius:4px;padding:0 5px;margin:1px 3px 1px 0;background:#eef0f6;
border:1px solid #d4d8e4}
tr.cat-removed .chip{border-color:var(--removed)}
tr.cat-preserved .chip{border-color:var(--preserved)}
tr.cat-emerged .chip{border-color:var(--emerged)}
.kind{color:var(--muted);font-size:11px}
.empty{color:var(--muted);font-style:italic;font-size:13px}
.hint{color:var(--muted);font-size:13px}
"""

_JS = """
(function(){
  var el=document.getElementById('probe-data'), D=el?JSON.parse(el.textContent):null;
  var CAT=D?D.categories:[];
  var TAG={removed:'removed',preserved:'preserved',emerged:'new',salient:'salient'};
  function esc(s){return String(s).replace(/[&<>"]/g,function(c){
    return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c];});}
  function players(row){
    return (row.getAttribute('data-players')||'').split(' ').filter(function(s){return s;});
  }
  function show(probe){
    var row=probe._hover||probe._pinned||null;
    var want=row?players(row):[], cat=row?row.getAttribute('data-cat'):'';
    probe.classList.toggle('focus',!!row);
    probe.querySelectorAll('.pl').forEach(function(w){
      var hit=want.indexOf(w.getAttribute('data-p'))>=0;
      w.classList.toggle('hl',hit);
      if(hit){w.setAttribute('data-cat',cat);}else{w.removeAttribute('data-cat');}
    });
    probe.querySelectorAll('.ix-row').forEach(function(r){r.classList.toggle('active',r===row);});
  }
  function bind(probe){
    probe.querySelectorAll('.ix-row').forEach(function(row){
      function on(){probe._hover=row;show(probe);}
      function off(){if(probe._hover===row){probe._hover=null;}show(probe);}
      row.addEventListener('mouseenter',on);row.addEventListener('focus',on);
      row.addEventListener('mouseleave',off);row.addEventListener('blur',off);
      row.addEventListener('click',function(){
        if(probe._pinned)probe._pinned.classList.remove('pinned');
        probe._pinned=(probe._pinned===row)?null:row;
        if(probe._pinned)row.classList.add('pinned');
        show(probe);
      });
      row.addEventListener('keydown',function(e){
        if(e.key==='Enter'||e.key===' '){e.preventDefault();row.click();}
      });
    });
  }
  function table(list,words,withKind){
    if(!list.length)return '<p class="empty">none</p>';
    var h='<table class="ix"><tbody>';
    list.forEach(function(it){
      var cat=CAT[it[2]], ps=[], chips='';
      for(var i=0;i<words.length;i++){
        if((it[0]>>i)&1){ps.push(i);chips+='<span class="chip">'+esc(words[i])+'</span>';}
      }
      var kind=withKind?' <span class="kind">'+(it[3]?'OR':'AND')+'</span>':'';
      h+='<tr class="ix-row cat-'+cat+'" data-cat="'+cat+'" data-players="'+ps.join(' ')+
        '" tabindex="0"><td class="tagcell"><span class="tag '+cat+'">'+TAG[cat]+'</span>'+
        kind+'</td><td>'+chips+'</td><td class="num">'+(it[1]>0?'+':'')+
        Number(it[1]).toPrecision(3)+'</td></tr>';
    });
    return h+'</tbody></table>';
  }
  function render(probe,k){
    var d=D.probes[+probe.getAttribute('data-index')][k], step=D.steps[k], words=[];
    probe.querySelectorAll('.pl').forEach(function(w){words[+w.getAttribute('data-p')]=w.textContent;});
    var which=step===D.stop?' (stop)':'';
    var cols=[['AND at step '+step+which,table(d[0],words,false)],
              ['OR at step '+step+which,table(d[1],words,false)]];
    var tracked=d[0].concat(d[1],d[2]).some(function(it){return CAT[it[2]]!=='salient';});
    if(tracked)cols.push(['Removed (strength at step '+D.base+')',table(d[2],words,true)]);
    probe.querySelector('.ix-grid').innerHTML=cols.map(function(c){
      return '<div class="ix-col"><h4>'+esc(c[0])+'</h4>'+c[1]+'</div>';}).join('');
    probe.querySelectorAll('.pl').forEach(function(w){
      var v=d[3][+w.getAttribute('data-p')];
      w.style.setProperty('--w',v===undefined?0:v/100);
      w.title='player '+w.getAttribute('data-p')+': '+(v===undefined?'–':v+'%')+
        ' of the strongest word';
    });
    probe.querySelector('.step-label').textContent='step '+step+which;
    probe._hover=probe._pinned=null;bind(probe);show(probe);
  }
  document.querySelectorAll('.probe').forEach(function(probe){
    bind(probe);
    var s=probe.querySelector('input.step');
    if(s&&D){s.disabled=false;s.addEventListener('input',function(){render(probe,+s.value);});}
  });
})();
"""


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    if isinstance(x, int) or float(x).is_integer() and abs(x) < 1e6:
        return f"{int(x)}"
    return f"{x:.{digits}g}"


def _pct(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    return f"{100 * x:.1f}%"


def _prompt_html(probe: ProbeInfo, strengths: Sequence[int] = ()) -> str:
    """The prompt, escaped, with every player wrapped in ``<span class="pl" data-p=i>``,
    coloured by ``strengths[i]`` (0-100, see :func:`.probe_steps.word_strengths`)."""
    parts, pos = [], 0
    order = sorted(range(len(probe.players)), key=lambda i: probe.players[i])
    for i in order:
        start, end = probe.players[i]
        if start < pos:  # overlapping spans (never written by the callback): skip the player
            continue
        parts.append(escape(probe.prompt[pos:start]))
        word = escape(probe.prompt[start:end])
        w = strengths[i] if i < len(strengths) else None
        style = f' style="--w:{w / 100:.2f}"' if w is not None else ""
        note = f": {w}% of the strongest word" if w is not None else ""
        parts.append(f'<span class="pl" data-p="{i}"{style} title="player {i}{note}">{word}</span>')
        pos = end
    parts.append(escape(probe.prompt[pos:]))
    return "".join(parts)


def _rows(items: Sequence[Interaction], show_kind: bool) -> str:
    if not items:
        return '<p class="empty">none</p>'
    out = ['<table class="ix"><tbody>']
    for it in items:
        chips = "".join(f'<span class="chip">{escape(w)}</span>' for w in it.words)
        kind = f' <span class="kind">{it.kind.upper()}</span>' if show_kind else ""
        players = " ".join(str(p) for p in it.players)
        cat = escape(it.category)
        tag = escape(_TAG.get(it.category, it.category))
        out.append(
            f'<tr class="ix-row cat-{cat}" data-cat="{cat}" data-players="{players}" tabindex="0">'
            f'<td class="tagcell"><span class="tag {cat}">{tag}</span>{kind}</td><td>{chips}</td>'
            f'<td class="num">{it.value:+.3g}</td></tr>'
        )
    out.append("</tbody></table>")
    return "".join(out)


def _probe_html(
    run: RunData, probe: ProbeInfo, top: int, steps: Sequence[int], strengths: Sequence[int]
) -> str:
    step = run.focus_step
    tops = run.top_interactions(probe.index, top)
    which = " (stop)" if step is not None and step == run.stop_step else ""
    cols = [
        (f"AND at step {step}{which}", _rows(tops["and"], False)),
        (f"OR at step {step}{which}", _rows(tops["or"], False)),
    ]
    if tops["removed"] or any(it.category != "salient" for it in tops["and"] + tops["or"]):
        cols.append((f"Removed (strength at step {run.base_step})", _rows(tops["removed"], True)))
    grid = "".join(f'<div class="ix-col"><h4>{escape(h)}</h4>{body}</div>' for h, body in cols)
    words = ", ".join(probe.words)
    stepper = ""
    if len(steps) > 1:
        at = steps.index(step) if step in steps else len(steps) - 1
        stepper = (
            f'<div class="stepper"><span class="step-label">step {step}{which}</span>'
            f'<input class="step" type="range" min="0" max="{len(steps) - 1}" value="{at}" '
            f'disabled aria-label="probed step ({steps[0]}–{steps[-1]})">'
            f'<span class="hint">{steps[0]} … {steps[-1]} ({len(steps)} probed steps)</span></div>'
        )
    return (
        f'<article class="card probe" id="probe-{probe.index}" data-index="{probe.index}">'
        f"<h3>Probe {escape(probe.label)}</h3>{stepper}"
        f'<div class="prompt" aria-label="prompt; players: {escape(words)}">'
        f"{_prompt_html(probe, strengths)}</div>"
        f'<details class="target"><summary>target (the trained response)</summary>'
        f"<pre>{escape(probe.target)}</pre></details>"
        f'<div class="ix-grid">{grid}</div></article>'
    )


def _summary_html(run: RunData, notes: Iterable[str]) -> str:
    steps = run.steps
    facts: list[tuple[str, str]] = [
        ("Run folder", escape(str(run.run_dir))),
        ("Snapshots", escape(str(run.interactions_dir))),
    ]
    if steps:
        facts.append(("Probe points", f"{len(steps)} (steps {steps[0]}–{steps[-1]})"))
    if run.train_steps is not None:
        facts.append(("Training steps reached", str(run.train_steps)))
    if run.stop is not None:
        reason = run.stop.get("reason") or "no reason recorded"
        facts.append(("Early stop", f"<b>step {run.stop_step}</b>: {escape(reason)}"))
    else:
        facts.append(("Early stop", "not triggered"))
    stage = run.stage_end_step
    facts.append(("First stage ended", f"step {stage}" if stage is not None else "not recorded"))
    if run.probes:
        facts.append(("Probes", f"{len(run.probes)} × {run.n_players} word players"))
    if run.model_kind:
        facts.append(("Model type", escape(str(run.model_kind))))
    facts.append(
        ("Reference model", "yes (γ measured)" if run.has_reference else "none (γ not measured)")
    )
    if run.log_history_source is not None:
        facts.append(("Loss history", escape(str(run.log_history_source))))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)

    focus = run.focus_step if run.record_at(run.focus_step) else (steps[-1] if steps else None)
    record = run.record_at(focus) or {}
    metrics = ""
    if record:
        gamma = run.has_reference and any(category_key(c, "gamma") in record for c in CATEGORIES)
        head = ["", "count", "strength share", "ρ"] + (["γ"] if gamma else []) + ["mean order"]
        rows = []
        for c in CATEGORIES:
            cells = [
                f'<span class="dot {c}"></span>{"newly emerged" if c == "emerged" else c}',
                _fmt(record.get(category_key(c, "count"))),
                _pct(record.get(category_key(c, "strength_norm"))),
                _fmt(record.get(category_key(c, "rho")), 2),
            ]
            if gamma:
                cells.append(_fmt(record.get(category_key(c, "gamma")), 2))
            cells.append(_fmt(record.get(category_key(c, "mean_order")), 2))
            rows.append("".join(f"<td>{x}</td>" for x in cells))
        which = " (stop)" if focus == run.stop_step else " (last)"
        extra = (
            f"noise {_fmt(record.get(NOISE_KEY))} · removed fraction "
            f"{_pct(record.get(REMOVED_FRACTION_KEY))} · total strength "
            f"{_fmt(record.get(TOTAL_STRENGTH_KEY))}. Removed interactions are "
            f"measured as the model encoded them at step {run.base_step}."
        )
        metrics = (
            f"<h3>Metrics at step {focus}{which}, mean over probes</h3>"
            '<table class="metrics"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>"
            + "".join(f"<tr>{r}</tr>" for r in rows)
            + f'</tbody></table><p class="hint">{extra}</p>'
        )
    notes = list(dict.fromkeys(notes))
    notes_html = ""
    if notes:
        items = "".join(f"<li>{escape(n)}</li>" for n in notes)
        notes_html = f'<div class="card notes"><b>Notes</b><ul>{items}</ul></div>'
    return (
        f'<section id="summary"><div class="card"><dl class="facts">{dl}</dl></div>'
        f'<div class="card">{metrics or "<p>No metrics recorded.</p>"}</div>{notes_html}</section>'
    )


def _rules_html(run: RunData) -> str:
    """Where the run's stop rule and its neighbours would have stopped, the step each keeps
    and the Trainer's evaluation loss there: the stop, checked against your own labels."""
    if not run.rules:
        return ""
    has_eval = any("eval_loss" in h for h in run.log_history)
    head = ["rule", "stops at", "keeps step", "share of planned steps"]
    head += ["eval loss at the kept step"] if has_eval else []
    rows = []
    for r in run.rules:
        stop = r.get("stop_step")
        cells = [
            escape(str(r.get("rule", ""))),
            "never (trains to the end)" if stop is None else f"step {stop}",
            escape(str(r.get("kept_step"))),
            _pct(r.get("fraction_of_steps")),
        ]
        if has_eval:
            cells.append(_fmt(run.eval_at(r.get("kept_step"))))
        rows.append("".join(f"<td>{c}</td>" for c in cells))
    return (
        '<section id="rules"><div class="card"><h3>Where other stop rules would have stopped'
        '</h3><table class="metrics"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(f"<tr>{r}</tr>" for r in rows)
        + '</tbody></table><p class="hint">Replayed from this run\'s probe points (no labels '
        "read). With a labelled evaluation, compare its value at each kept step.</p>"
        "</div></section>"
    )


def render_html(
    run: RunData,
    images: Sequence[tuple[str, str, bytes]],
    *,
    top: int = 8,
    notes: Iterable[str] = (),
) -> str:
    """The report page. ``images`` are ``(file name, caption, PNG bytes)`` of the PNG files
    written beside the page: linked, not embedded (the page draws its own SVG charts)."""
    title = f"SFT interaction report: {run.run_dir.name or run.run_dir}"
    figures = []
    for anchor, caption, draw in CHARTS:
        svg = draw(run)
        if svg:
            cap = f"<figcaption>{escape(caption)}</figcaption>"
            figures.append(f'<figure id="plot-{anchor}">{svg}{cap}</figure>')
    files = " · ".join(f'<a href="{escape(name)}">{escape(name)}</a>' for name, _, _ in images)
    if files:
        figures.append(
            f'<p class="hint">The same curves as PNG files beside this page: {files}.</p>'
        )
    data = probe_step_data(run, top) if run.probes and run.snapshot_steps else None
    focus = run.focus_step
    try:
        focus_words = word_strengths(run, focus) if focus in run.snapshot_steps else []
    except (KeyError, ValueError, RuntimeError):
        focus_words = []
    steps = data["steps"] if data else []
    probes = "".join(
        _probe_html(run, p, top, steps, focus_words[p.index] if p.index < len(focus_words) else ())
        for p in run.probes
    )
    if not run.probes:
        probes_section = '<p class="empty">No probes.json: probe texts are not available.</p>'
    else:
        probes_section = (
            '<p class="hint">Players (the masked words) are underlined in each prompt and '
            "shaded by how strongly they take part in salient interactions at the chosen step. "
            "Move a probe's step slider to see it at every probed step; hover, focus or click an "
            "interaction to highlight its words. Strengths are the signed interactions I(S), "
            f"the {top} strongest by |I(S)| per list.</p>" + probes
        )
    script = ""
    if data is not None:
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        script = f'<script type="application/json" id="probe-data">{payload}</script>'
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    plots = "".join(figures) or "<p>No plots.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>SFT interaction report</h1>"
        f'<p class="sub">{escape(str(run.run_dir))} · generated {now}</p>'
        '<nav><a href="#summary">Summary</a><a href="#plots">Plots</a>'
        '<a href="#probes">Probes</a></nav></header>'
        f"<h2>Summary</h2>{_summary_html(run, notes)}{_rules_html(run)}"
        f'<h2 id="plots">Plots</h2><div class="plots">{plots}</div>'
        f'<h2 id="probes">Probes</h2><section>{probes_section}</section>'
        f"</main>{script}<script>{_JS}</script></body></html>\n"
    )
