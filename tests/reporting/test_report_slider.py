"""The page's step slider, run in Node against a minimal stand-in DOM (no browser needed).

Moving a probe's slider must re-render its interaction lists for that step from the
page's JSON, recolour its words by that step's strengths and relabel the step. Skipped
without a ``node`` binary.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from sft_interaction_callback.reporting.run_data import load_run

# A stand-in for the few DOM calls the page's script makes.
FAKE_DOM = r"""
function El(cls, attrs){ this.cls=new Set(cls||[]); this.attrs=attrs||{}; this.kids=[];
  this.style={props:{},setProperty:function(k,v){this.props[k]=v;}}; this.listeners={};
  this.textContent=''; this.innerHTML=''; this.title='';
  var self=this; this.classList={toggle:function(c,on){on?self.cls.add(c):self.cls.delete(c);},
    add:function(c){self.cls.add(c);}, remove:function(c){self.cls.delete(c);},
    contains:function(c){return self.cls.has(c);}}; }
El.prototype.getAttribute=function(k){return k in this.attrs?this.attrs[k]:null;};
El.prototype.setAttribute=function(k,v){this.attrs[k]=String(v);};
El.prototype.removeAttribute=function(k){delete this.attrs[k];};
El.prototype.addEventListener=function(t,f){this.listeners[t]=f;};
El.prototype.all=function(){var out=[];this.kids.forEach(function(k){out.push(k);
  out=out.concat(k.all());});return out;};
El.prototype.querySelectorAll=function(sel){var c=sel.split('.').pop();
  return this.all().filter(function(e){return e.cls.has(c);});};
El.prototype.querySelector=function(sel){return this.querySelectorAll(sel)[0]||null;};
var DATA = __DATA__, WORDS = __WORDS__;
var doc = new El([]), probes = [];
WORDS.forEach(function(words, p){
  var probe = new El(['probe'], {'data-index': String(p)});
  var slider = new El(['step']); slider.value = String(DATA.focus);
  var label = new El(['step-label']), grid = new El(['ix-grid']);
  probe.kids.push(slider, label, grid);
  words.forEach(function(w, i){ var s = new El(['pl'], {'data-p': String(i)});
    s.textContent = w; probe.kids.push(s); });
  doc.kids.push(probe); probes.push(probe);
});
var script = new El([]); script.textContent = JSON.stringify(DATA);
global.document = {getElementById: function(){return script;},
  querySelectorAll: function(sel){return doc.querySelectorAll(sel);}};
"""

RUN = r"""
var out = [];
probes.forEach(function(probe){
  var slider = probe.querySelector('input.step');
  slider.value = '0'; slider.listeners['input']();
  out.push({grid: probe.querySelector('.ix-grid').innerHTML,
            label: probe.querySelector('.step-label').textContent,
            w: probe.querySelectorAll('.pl').map(function(w){return w.style.props['--w'];}),
            enabled: slider.disabled === false});
});
console.log(JSON.stringify(out));
"""


def test_moving_the_slider_shows_that_step(full_report, full_run, tmp_path):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node binary")
    from sft_interaction_callback.reporting.html_report import _JS

    page = full_report.html.read_text(encoding="utf-8")
    raw = re.search(r'id="probe-data">(.*?)</script>', page).group(1)
    data = json.loads(raw)
    words = [p.words for p in full_run.probes]
    script = FAKE_DOM.replace("__DATA__", raw).replace("__WORDS__", json.dumps(words))
    path = tmp_path / "slider.js"
    path.write_text(script + _JS + RUN, encoding="utf-8")
    result = subprocess.run([node, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    run = load_run(full_run.root)
    step = data["steps"][0]
    for p, got in enumerate(json.loads(result.stdout)):
        assert got["enabled"] and got["label"] == f"step {step}"
        assert f"AND at step {step}" in got["grid"] and f"OR at step {step}" in got["grid"]
        top = run.top_interactions(p, 8, step)
        for it in top["and"][:2]:
            chips = "".join(f'<span class="chip">{w}</span>' for w in it.words)
            assert chips in got["grid"]
        assert got["w"] == [v / 100 for v in data["probes"][p][0][3]]
