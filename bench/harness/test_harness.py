"""Unit tests of the harness's pure parts: `python3 -m unittest discover -s bench/harness -t bench`."""

import unittest

from harness import measure, report, stats


class HistogramLayout(unittest.TestCase):
    def test_mirrors_the_rust_layout(self):
        # Values from bench/loadgen/src/hist.rs: exact below 256, then 128 buckets per octave.
        self.assertEqual([stats.bucket_low(i) for i in (0, 255, 256, 383, 384)], [0, 255, 256, 510, 512])
        self.assertEqual([stats.bucket_width(i) for i in (255, 256, 384, 512)], [1, 2, 4, 8])

    def test_quantiles_of_merged_reports(self):
        a = {"hist": [[10, 98]], "max_us": 10}
        b = {"hist": [[10, 1], [1000, 1]], "max_us": 1500}
        counts = stats.merge_hist([a, b])
        self.assertEqual(counts, {10: 99, 1000: 1})
        self.assertEqual(stats.quantile(counts, 0.5), 10)
        self.assertGreater(stats.quantile(counts, 1.0), 1000)
        self.assertEqual(stats.quantile({}, 0.5), 0)


def step_report(clients, in_time, first, last, count):
    return {"clients": clients, "expected": 2 * clients, "in_time": in_time, "window_rx": in_time,
            "total_rx": in_time, "late_start": False, "first_idx": 0, "hist": [[100, in_time]],
            "max_us": 100, "elapsed_s": 2.0, "cpu_s": 0.5,
            "span_first": first, "span_last": last, "span_count": count}


class MergeSteps(unittest.TestCase):
    def test_spans_cover_every_process_and_skip_incomplete_events(self):
        a = step_report(2, 4, [1000, 2000], [1100, 2100], [2, 2])
        b = step_report(2, 3, [1050, 2000], [1300, 2000], [2, 1])
        m = stats.merge_steps([a, b])
        self.assertEqual((m["expected"], m["in_time"]), (8, 7))
        self.assertAlmostEqual(m["delivered_ratio"], 7 / 8)
        self.assertEqual((m["span_events"], m["span_p50_us"]), (1, 300))
        self.assertEqual(m["loadgen_cores"], 0.5)

    def test_summary_is_median_min_max(self):
        self.assertEqual(stats.summary([3, None, 1, 2]), {"median": 2, "min": 1, "max": 3, "n": 3})
        self.assertIsNone(stats.summary([None]))


class Report(unittest.TestCase):
    def test_targets_compare_medians(self):
        s = lambda v: {"median": v, "min": v, "max": v, "n": 1}  # noqa: E731
        table = {("cryptoworker", 1000): {"sat": s(400), "cpu": s(2), "p50": s(1000), "p99": s(3000)},
                 ("cryptoworker-noenrich", 1000): {"sat": s(450)},
                 ("cryptoworker-2ms", 1000): {"sat": s(120)},
                 ("cryptoworker-db", 1000): {"sat": s(300), "p50": s(2500), "p99": s(6000)},
                 ("tokio", 1000): {"sat": s(100), "cpu": s(5), "p99": s(4000)}}
        lines = report.targets(table, {("cryptoworker", 10000): s(1.5)}, [1000])
        text = "\n".join(lines)
        self.assertIn("cryptoworker 4.00x tokio (target >= 2x): met", text)
        self.assertIn("cryptoworker 0.89x cryptoworker-noenrich (target >= 0.8x): met", text)
        self.assertIn("cryptoworker-2ms 1.20x tokio (target >= 1.5x): NOT met", text)
        self.assertIn("0.40x tokio's (target <= 0.6x): met", text)
        self.assertIn("3.00 ms vs tokio 4.00 ms (target <=): met", text)
        self.assertIn("p50 +1.50 ms, p99 +3.00 ms", text)
        self.assertIn("1.50 KiB/conn (target <= 1.5): met", text)


if __name__ == "__main__":
    unittest.main()


class SaturationSearch(unittest.TestCase):
    """The search against a fake server that sustains up to `limit` deliveries/s (cap 12 M/s)."""

    def search(self, limit, guess, factor=1.6):
        run = measure.ServerRun.__new__(measure.ServerRun)
        run.n, run.sat_steps, run.log = 100, [], lambda msg: None
        tried = []

        def step(rate, window_s, spans, s):
            dps = rate * run.n
            tried.append(round(dps))
            ok = dps <= limit
            return {"pass": ok, "dps": dps, "delivered_ratio": 1.0 if ok else 0.5, "p99_us": 1000,
                    "server_cores": 0.9, "load_cores": 0.5, "loadgen_cores": 0.5}

        run.step = step
        return run.saturation(measure.Settings(), guess, factor), tried

    def test_a_server_beyond_the_cap_is_measured_at_the_cap(self):
        # 5 M, 8 M, then 12.8 M would pass the cap: the cap itself is tried instead.
        res, tried = self.search(limit=20_000_000, guess=5_000_000)
        self.assertEqual(tried, [5_000_000, 8_000_000, 12_000_000])
        self.assertEqual((res["sustained_dps"], res["bound"]), (12_000_000, "above-max"))

    def test_a_limit_between_the_last_step_and_the_cap_is_bisected(self):
        res, tried = self.search(limit=10_000_000, guess=5_000_000)
        self.assertEqual(tried[:3], [5_000_000, 8_000_000, 12_000_000])
        self.assertIsNone(res["bound"])
        self.assertGreater(res["sustained_dps"], 10_000_000 / 1.13)
        self.assertLessEqual(res["sustained_dps"], 10_000_000)
