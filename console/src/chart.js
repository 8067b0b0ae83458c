// Line charts over steps, drawn by uPlot (canvas; thousands of points stay fast).
import { html } from "htm/preact";
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

const COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];

/** `steps`: x values; `series`: [{label, values}] aligned with steps (null = no point). */
export function LineChart({ title, steps, series, height = 220 }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shape = series.map((s) => s.label).join("|");

  useEffect(() => {
    const width = () => Math.max(280, box.current.clientWidth);
    const options = {
      width: width(),
      height,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      series: [
        { label: "step" },
        ...series.map((s, i) => ({ label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true, points: { show: s.points ?? false } })),
      ],
    };
    plot.current = new uPlot(options, [steps, ...series.map((s) => s.values)], box.current);
    const resize = new ResizeObserver(() => plot.current && box.current && plot.current.setSize({ width: width(), height }));
    resize.observe(box.current);
    return () => {
      resize.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [shape, height]);

  useEffect(() => {
    if (plot.current) plot.current.setData([steps, ...series.map((s) => s.values)]);
  }, [steps, series]);

  return html`<figure class="chart" data-points=${steps.length}>
    <figcaption>${title}</figcaption>
    <div ref=${box} role="img" aria-label=${`${title}: ${series.map((s) => `${s.label} ${lastValue(s.values)}`).join(", ")}`}></div>
  </figure>`;
}

function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] != null) return values[i].toFixed(3);
  return "no data yet";
}
