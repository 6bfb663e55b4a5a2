-- 0.1.0 -> 0.2.0: placement's index of the user's own nodes gains the GPU
-- model and region, so a placement onto a node the user already runs reads
-- that node's entries alone (issue 16: no per-request scan that grows with
-- the fleet).
DROP INDEX provisioning.nodes_user_idx;
CREATE INDEX nodes_user_idx ON provisioning.nodes (current_user_id, current_image, gpu_model, region, free_slots, node_id)
    WHERE state = 'ready' AND current_user_id IS NOT NULL;
-- The live allocations' index by node serves no query (a node's counts are
-- kept on the node), and cost every placement an index entry and a lock.
DROP INDEX provisioning.allocations_node_idx;
-- Running nodes by image: no query needs it since shared tenancy is refused,
-- and a plan made against an empty fleet could pick it for the user's own
-- nodes (and read every running node).
DROP INDEX provisioning.nodes_running_idx;
