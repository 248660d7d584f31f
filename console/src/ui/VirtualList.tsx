// A list that renders only the rows in view (fixed row height), for 1,000-row pages,
// 1,000-node timelines and long event logs.
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

interface Props<T> {
  items: T[];
  rowHeight: number;
  height: number;
  row: (item: T, index: number) => ComponentChildren;
  class?: string;
  // Keep the view at the bottom while new rows arrive, unless the user scrolled up.
  follow?: boolean;
}

export function VirtualList<T>({ items, rowHeight, height, row, follow, ...rest }: Props<T>) {
  const box = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const atBottom = useRef(true);
  useEffect(() => {
    const el = box.current;
    if (el && follow && atBottom.current) el.scrollTop = el.scrollHeight;
  }, [items.length, follow]);
  const first = Math.max(0, Math.floor(top / rowHeight) - 10);
  const last = Math.min(items.length, Math.ceil((top + height) / rowHeight) + 10);
  const shown = [];
  for (let i = first; i < last; i++) {
    shown.push(
      <div class="vrow" style={{ top: `${i * rowHeight}px`, height: `${rowHeight}px` }} key={i}>
        {row(items[i], i)}
      </div>,
    );
  }
  return (
    <div
      ref={box}
      class={`vlist ${rest.class ?? ""}`}
      style={{ height: `${height}px` }}
      onScroll={(e) => {
        const el = e.currentTarget as HTMLDivElement;
        atBottom.current = el.scrollTop + el.clientHeight >= el.scrollHeight - rowHeight;
        setTop(el.scrollTop);
      }}
    >
      <div style={{ height: `${items.length * rowHeight}px`, position: "relative" }}>{shown}</div>
    </div>
  );
}
