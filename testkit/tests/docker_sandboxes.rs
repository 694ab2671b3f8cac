//! The API-level sandbox suite (`api_suite`) against workers running the docker
//! provider on the real engine: exec, streams, files (100 MB through the archive
//! API), logs, destroy and bad input. Skipped visibly without an engine.

mod api_suite;

use api_suite::Flavor;

macro_rules! docker_suite {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(flavor) = Flavor::docker(concat!("docker_sandboxes::", stringify!($name))).await
            else {
                return;
            };
            api_suite::$name(&flavor).await;
        }
    )*};
}

docker_suite!(
    exec_answers_stacyvm_shapes,
    stream_chunks_arrive_before_the_command_ends_then_one_exit_line,
    files_round_trip_binary_and_large_content,
    bad_paths_and_bad_requests_are_refused_clearly,
    unknown_and_destroyed_sandboxes_are_404_and_destroy_races_act_once,
    logs_record_lifecycle_and_execs_and_can_be_followed,
    a_client_that_disconnects_mid_stream_leaves_no_command_running,
);
