//! Talking to the Docker engine, and finding the containers this project made.
//!
//! Every container the agent creates carries [`LABEL`], plus the host and process that own it.
//! At start an agent removes labelled containers whose owning process on this host is gone
//! (leftovers of a crash or `kill -9`), and never touches the live ones of another agent.

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use std::collections::HashMap;

/// Marks every container crater-at-home creates.
pub const LABEL: &str = "org.crater-at-home.slot";
/// The hostname of the agent that owns the container.
pub const LABEL_OWNER_HOST: &str = "org.crater-at-home.owner-host";
/// The process id of the agent that owns the container.
pub const LABEL_OWNER_PID: &str = "org.crater-at-home.owner-pid";

/// Connects to the local engine and negotiates the API version, so a newer bollard works with an
/// older daemon.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .context("cannot reach the Docker engine (is it running, and may this user use it?)")?;
    docker
        .negotiate_version()
        .await
        .context("cannot reach the Docker engine (is it running, and may this user use it?)")
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned())
}

/// The labels of a container owned by this process.
pub fn owner_labels() -> HashMap<String, String> {
    HashMap::from([
        (LABEL.to_owned(), "1".to_owned()),
        (LABEL_OWNER_HOST.to_owned(), hostname()),
        (LABEL_OWNER_PID.to_owned(), std::process::id().to_string()),
    ])
}

/// Ids of the project's containers, optionally only those owned by process `pid` on this host.
pub async fn labelled_containers(docker: &Docker, pid: Option<u32>) -> Result<Vec<String>> {
    let mut label_filters = vec![LABEL.to_owned()];
    if let Some(pid) = pid {
        label_filters.push(format!("{LABEL_OWNER_HOST}={}", hostname()));
        label_filters.push(format!("{LABEL_OWNER_PID}={pid}"));
    }
    let filters = HashMap::from([("label".to_owned(), label_filters)]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(options)).await?;
    Ok(containers.into_iter().filter_map(|c| c.id).collect())
}

/// Removes containers left behind by agents on this host that are no longer running.
pub async fn remove_leftovers(docker: &Docker) -> Result<usize> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            LABEL.to_owned(),
            format!("{LABEL_OWNER_HOST}={}", hostname()),
        ],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let mut removed = 0;
    for container in docker.list_containers(Some(options)).await? {
        let owner_alive = container
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_OWNER_PID))
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(process_alive);
        if owner_alive {
            continue;
        }
        if let Some(id) = container.id {
            tracing::info!(container = %id, "removing a leftover container");
            remove(docker, &id).await;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Force-removes a container and its anonymous volumes (/build). Errors are logged, not
/// returned: removal is clean-up, and a container that is already gone is the goal.
pub async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => tracing::warn!(container = %id, "could not remove container: {e}"),
    }
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
