-- The health score of service $service for the window [$start, $end), from the
-- stored history: the same formula the collector evaluates (docs/analytics.md, "Health").
-- $alerts is the number of alerts firing for the service at $end (0 when none).
WITH calls AS (
  SELECT count(*) AS calls,
         count(*) FILTER (WHERE status_code = 'ERROR') AS errors,
         count(*) FILTER (WHERE duration_ns <= 1000 * 1000000) AS satisfied,
         count(*) FILTER (WHERE duration_ns > 1000 * 1000000
                            AND duration_ns <= 4 * 1000 * 1000000) AS tolerating
  FROM spans
  WHERE service_name = '$service' AND end_time >= '$start' AND end_time < '$end'
), work AS (
  SELECT count(*) FILTER (WHERE event = 'claim') AS claims,
         count(*) FILTER (WHERE event = 'claim' AND conflict) AS conflicts,
         count(*) FILTER (WHERE event = 'complete') AS completed,
         count(*) FILTER (WHERE event = 'fail') AS failed
  FROM coordination_events
  WHERE service_name = '$service' AND time >= '$start' AND time < '$end'
), holders AS (
  -- Who holds work at $end: each item's latest non-conflicting event is a claim or
  -- progress within the lease (processors.coordination.lease_timeout_ms).
  SELECT DISTINCT holder AS agent_id
  FROM (SELECT work_id, last_value(agent_id ORDER BY time) AS holder,
               last_value(event ORDER BY time) AS event, max(time) AS last_time
        FROM coordination_events
        WHERE NOT conflict AND time < '$end'
          AND event IN ('claim', 'progress', 'complete', 'fail', 'release')
        GROUP BY work_id)
  WHERE event IN ('claim', 'progress') AND holder IS NOT NULL
    AND last_time >= TIMESTAMP '$end' - INTERVAL '3600 seconds'
), agents AS (
  -- Of the holders seen in the service, those seen anywhere since $start.
  SELECT count(*) FILTER (WHERE live) AS live, count(*) AS known
  FROM (SELECT s.agent_id, bool_or(s.t >= '$start') AS live
        FROM (SELECT agent_id, end_time AS t, service_name FROM spans
              UNION ALL
              SELECT agent_id, time AS t, service_name FROM coordination_events) s
        JOIN holders h ON h.agent_id = s.agent_id
        WHERE s.t >= TIMESTAMP '$end' - INTERVAL '3600 seconds'
        GROUP BY s.agent_id
        HAVING bool_or(s.service_name = '$service'))
), components AS (
  SELECT CASE WHEN calls > 0 THEN 100.0 * (calls - errors) / calls END AS errors,
         CASE WHEN calls > 0 THEN 100.0 * (satisfied + tolerating / 2.0) / calls END AS latency,
         CASE WHEN completed + failed > 0 THEN 100.0 * completed / (completed + failed) END AS work,
         CASE WHEN claims > 0 THEN 100.0 * (claims - conflicts) / claims END AS conflicts,
         CASE WHEN known > 0 THEN 100.0 * live / known END AS liveness,
         greatest(0.0, 100.0 - 50.0 * $alerts) AS alerts
  FROM calls, work, agents
)
SELECT (coalesce(0.3 * errors, 0) + coalesce(0.2 * latency, 0) + coalesce(0.2 * work, 0)
        + coalesce(0.1 * conflicts, 0) + coalesce(0.1 * liveness, 0) + 0.1 * alerts)
     / (CASE WHEN errors IS NULL THEN 0 ELSE 0.3 END + CASE WHEN latency IS NULL THEN 0 ELSE 0.2 END
        + CASE WHEN work IS NULL THEN 0 ELSE 0.2 END + CASE WHEN conflicts IS NULL THEN 0 ELSE 0.1 END
        + CASE WHEN liveness IS NULL THEN 0 ELSE 0.1 END + 0.1) AS score
FROM components
