//! One retrain run, from request to promoted (or kept) model.
//!
//! The order of the steps is what makes a crash harmless:
//!
//! 1. take the run lock (one training at a time; runs left `running` by a
//!    dead process are marked failed);
//! 2. read the labelled data and split it by content hash;
//! 3. train, on a blocking thread, reporting each epoch in the run row;
//! 4. score the new model and the promoted one on the same holdout (the
//!    promoted one's judged model, when it was refit);
//! 5. refit: train the same recipe on every labelled recording, holdout and
//!    validation too, and give that model the judged one's thresholds and
//!    figures (`birdsong_model::refit`; the `refit` parameter, on by default);
//! 6. publish the artifact through the registry (immutable objects under a
//!    key of its own, the judged model beside a refit one, then its
//!    `model_versions` row as a candidate);
//! 7. promote it through the registry if it passed the gate, and queue the
//!    tasks that were waiting for a model.
//!
//! The gate compares judged models: a refit model has trained on the
//! holdout, so its own scores there would flatter it, while its judged model
//! never saw a holdout recording (a recording's split comes from its
//! content alone and does not change between runs).
//!
//! A crash before step 7 leaves at most a candidate or unreferenced
//! objects, never a promoted version whose objects are missing, and the
//! promoted model untouched.

use std::collections::BTreeMap;
use std::sync::Arc;

use birdsong_analysis::{Analyzer, Backbone, Settings};
use birdsong_audio::WindowConfig;
use birdsong_common::Config;
use birdsong_common::db::query;
use birdsong_common::messages::RetrainRequest;
use birdsong_common::queue::Publisher;
use birdsong_common::store::ObjectStore;
use birdsong_model::{
    Artifact, CNN, Classifier, Recording, SpectrogramRecording, Stopping, TrainedModel, class_list,
};
use birdsong_registry::{self as registry, NewVersion};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::dataset::{self, Labelled};

use crate::error::RetrainError;
use crate::gate::{self, Decision, Scores};
use crate::lock::RunLock;
use crate::params::{self, RunParams};
use crate::progress::Progress;
use crate::split::{self, Split};

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The run ended with this status (`succeeded`, `failed`, `skipped`).
    Finished(String),
    /// The run was no longer `requested` (a redelivery after a crash, or a
    /// request handled elsewhere): nothing was done.
    AlreadyHandled(String),
    /// No such run row; nothing was done.
    UnknownRun,
}

/// What a completed run produced.
enum Outcome {
    Skipped(String),
    Trained,
}

/// Everything a run needs.
#[derive(Clone)]
pub struct Retrainer {
    pub pool: PgPool,
    pub objects: ObjectStore,
    pub config: Config,
    /// Analyses labelled recordings no worker has (for the requested backbone).
    pub analyzer: Arc<Analyzer>,
}

impl Retrainer {
    /// A retrainer analysing with the configured windows and BirdNET install.
    pub fn new(pool: PgPool, objects: ObjectStore, config: Config) -> Self {
        let analyzer = Arc::new(Analyzer::new(Settings::from_config(&config.worker)));
        Self {
            pool,
            objects,
            config,
            analyzer,
        }
    }

    /// Runs the request under the run lock. An error means the run's row
    /// could not be brought to a final status (a service is down): the
    /// request should be retried later.
    pub async fn handle(
        &self,
        publisher: &Publisher,
        req: &RetrainRequest,
    ) -> Result<Handled, RetrainError> {
        let mut lock = RunLock::acquire(&self.config.database.url).await?;
        let result = self.handle_locked(&mut lock, publisher, req).await;
        lock.release().await;
        result
    }

    async fn handle_locked(
        &self,
        lock: &mut RunLock,
        publisher: &Publisher,
        req: &RetrainRequest,
    ) -> Result<Handled, RetrainError> {
        lock.fail_stale_runs().await?;
        let row: Option<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT status, requested_at FROM retrain_runs WHERE id = $1")
                .bind(req.run_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query("reading the run"))?;
        let Some((status, requested_at)) = row else {
            tracing::warn!(run = %req.run_id, "retrain request names no run row; ignoring it");
            return Ok(Handled::UnknownRun);
        };
        if status != "requested" {
            tracing::info!(run = %req.run_id, %status, "run already handled; ignoring the request");
            return Ok(Handled::AlreadyHandled(status));
        }
        sqlx::query(
            "UPDATE retrain_runs SET status = 'running', started_at = now(),
                    progress = '{\"stage\": \"starting\"}'
             WHERE id = $1",
        )
        .bind(req.run_id)
        .execute(&self.pool)
        .await
        .map_err(query("starting the run"))?;
        tracing::info!(run = %req.run_id, trigger = ?req.trigger, "retrain run started");

        let (progress, writer) = Progress::start(self.pool.clone(), req.run_id);
        let outcome = self.execute(req, requested_at, publisher, &progress).await;
        writer.finish(progress).await;
        let (status, error, stage) = match &outcome {
            Ok(Outcome::Trained) => ("succeeded", None, "done".to_string()),
            Ok(Outcome::Skipped(reason)) => ("skipped", Some(reason.clone()), "skipped".into()),
            Err(e) => ("failed", Some(e.to_string()), "failed".into()),
        };
        match &outcome {
            Ok(Outcome::Trained) => tracing::info!(run = %req.run_id, "retrain run succeeded"),
            Ok(Outcome::Skipped(reason)) => {
                tracing::info!(run = %req.run_id, %reason, "retrain run skipped")
            }
            Err(e) => tracing::error!(run = %req.run_id, error = %e, "retrain run failed"),
        }
        sqlx::query(
            "UPDATE retrain_runs
             SET status = $2, error = $3, finished_at = now(),
                 progress = coalesce(progress, '{}'::jsonb) || jsonb_build_object('stage', $4::text)
             WHERE id = $1",
        )
        .bind(req.run_id)
        .bind(status)
        .bind(error)
        .bind(stage)
        .execute(&self.pool)
        .await
        .map_err(query("finishing the run"))?;
        Ok(Handled::Finished(status.to_string()))
    }

    /// The run's steps, in the order that makes a crash harmless (see the
    /// module docs).
    async fn execute(
        &self,
        req: &RetrainRequest,
        requested_at: DateTime<Utc>,
        publisher: &Publisher,
        progress: &Progress,
    ) -> Result<Outcome, RetrainError> {
        let params = params::parse(&req.params).map_err(RetrainError::Params)?;
        let sets = match self
            .prepare_data(req, requested_at, &params, progress)
            .await?
        {
            Prepared::Skip(reason) => return Ok(Outcome::Skipped(reason)),
            Prepared::Sets(sets) => sets,
        };
        check_trainable(&sets, &params)?;
        let DataSets {
            train,
            spectrograms,
            validation,
            holdout,
        } = sets;
        let train = match spectrograms {
            Some(s) => {
                // Its mel windows were only counted; the crops come from `s`.
                drop(train);
                TrainingSet::Spectrograms(Arc::new(s))
            }
            None => TrainingSet::Windows(Arc::new(train)),
        };
        let trained = self
            .train(
                params.clone(),
                train.clone(),
                validation.clone(),
                progress,
                "training",
            )
            .await?;
        progress.report(json!({"stage": "evaluating", "holdout_recordings": holdout.len()}));
        let mut current = self.current_model().await?;
        let backbone = params.train.features.backbone();
        let current_backbone = current
            .as_ref()
            .and_then(|c| c.artifact.as_ref())
            .map(|a| a.meta().features.backbone());
        let mut current_holdout = None;
        if let (Some(other), Some(c)) = (current_backbone, current.as_mut())
            && other != backbone
        {
            let analyzer = self.analyzer.clone();
            let usable = tokio::task::spawn_blocking(move || analyzer.ensure(other))
                .await
                .map_err(|e| RetrainError::Internal(format!("loading a backbone panicked: {e}")))?;
            match usable {
                Ok(()) => {
                    // The promoted model is scored on its own vectors of the
                    // same recordings.
                    let window = self.analyzer.windowing(other);
                    let (recordings, _) = self
                        .reanalysed(other, &window, &holdout, progress, "loading the holdout")
                        .await?;
                    current_holdout = Some(recordings);
                }
                Err(e) => {
                    // Cannot be scored here: compared as a model that failed to load.
                    c.artifact = None;
                    c.load_error = Some(e.to_string());
                }
            }
        }
        // The held-out recordings come back from the evaluation: the refit
        // trains on them.
        let ((judged, new_scores, current_scores), holdout, validation) = {
            let current = current.clone();
            tokio::task::spawn_blocking(move || {
                let current_holdout = current_holdout.as_deref().unwrap_or(&holdout);
                let evaluated = evaluate(trained, current, &holdout, current_holdout, &validation);
                evaluated.map(|e| (e, holdout, validation))
            })
            .await
            .map_err(|e| RetrainError::Internal(format!("evaluation panicked: {e}")))??
        };
        let decision = gate::decide(
            params.gate_metric,
            req.force_promote,
            new_scores.as_ref(),
            current.as_ref().map(|c| c.version.as_str()),
            current_scores.as_ref(),
        );
        // With nothing held out, a refit would train on the same recordings again.
        let (mut artifact, judged) =
            if params.refit && !(holdout.is_empty() && validation.is_empty()) {
                let refit = self
                    .refit(&params, train, validation, holdout, &judged, progress)
                    .await?;
                (refit, Some(judged))
            } else {
                (judged, None)
            };
        progress.report(json!({"stage": "publishing"}));
        let version = self
            .publish(
                req.run_id,
                &mut artifact,
                judged.as_ref(),
                &params,
                &new_scores,
                &decision,
            )
            .await?;
        let run_metrics = json!({
            "gate_metric": params.gate_metric.name(),
            "new": new_scores,
            "current": current.as_ref().map(|c| json!({
                "version": c.version,
                "scores": current_scores,
                "scored": if c.judged { "its judged model" } else { "the served model" },
                "load_error": c.load_error,
            })),
            "decision": decision.reason,
            "final_loss": artifact.meta().history.last().map(|h| h.loss),
            "epochs": artifact.meta().history.len(),
            "refit": artifact.meta().refit,
        });
        self.record_model(req.run_id, &version, &run_metrics)
            .await?;
        if decision.promote {
            self.promote(req.run_id, &version, &decision, publisher)
                .await?;
        } else {
            tracing::info!(%version, reason = %decision.reason, "kept as a candidate");
        }
        Ok(Outcome::Trained)
    }

    /// Steps 2 and the data half of 3: the labelled recordings, their stable
    /// split, the training set cut with the recipe's windows, and the data
    /// summary on the run row. A later run over the same data and parameters
    /// makes this one redundant.
    async fn prepare_data(
        &self,
        req: &RetrainRequest,
        requested_at: DateTime<Utc>,
        params: &RunParams,
        progress: &Progress,
    ) -> Result<Prepared, RetrainError> {
        let run = req.run_id;
        let backbone = params.train.features.backbone();
        let window = self.analyzer.windowing(backbone);
        let labels = dataset::labels(&self.pool).await?;
        let fingerprint = dataset::fingerprint(&labels, backbone, &window);
        if let Some(other) = self
            .covered_by(run, &fingerprint, req, requested_at)
            .await?
        {
            return Ok(Prepared::Skip(format!(
                "run {other} started after this request and trained on the same labelled data \
                 with the same parameters"
            )));
        }

        progress.report(json!({"stage": "loading data", "labelled_recordings": labels.len()}));
        let p = progress.clone();
        let (recordings, decoded, unusable) = dataset::load(
            &self.pool,
            &self.objects,
            &self.analyzer,
            backbone,
            &window,
            &labels,
            |i, n| {
                p.report(json!({"stage": "decoding", "done": i, "of": n}));
            },
        )
        .await?;

        let pairs: Vec<(&str, &str)> = recordings
            .iter()
            .map(|r| (r.sha256.as_str(), r.label.as_str()))
            .collect();
        let splits = split::assign(&pairs);
        let mut sets: BTreeMap<Split, Vec<Recording>> = BTreeMap::new();
        for (r, s) in recordings.iter().zip(&splits) {
            sets.entry(*s).or_default().push(to_recording(r));
        }
        let mut train = sets.remove(&Split::Train).unwrap_or_default();
        let validation = sets.remove(&Split::Validation).unwrap_or_default();
        let holdout = sets.remove(&Split::Holdout).unwrap_or_default();
        let cnn = params.train.architecture == CNN;
        let training_window = params.train.training_windows(&window);
        let mut training_decoded = 0;
        let mut spectrograms = None;
        if cnn {
            // The CNN draws crops at every frame of each training recording's
            // spectrogram instead of reading cut windows.
            progress.report(json!({"stage": "loading spectrograms", "recordings": train.len()}));
            let p = progress.clone();
            let loaded = dataset::spectrograms(&self.objects, &train, |i, n| {
                p.report(json!({"stage": "loading spectrograms", "done": i, "of": n}));
            })
            .await?;
            training_decoded = loaded.len();
            spectrograms = Some(loaded);
        } else if training_window != window {
            (train, training_decoded) = self
                .reanalysed(
                    backbone,
                    &training_window,
                    &train,
                    progress,
                    "loading training windows",
                )
                .await?;
        }
        if params.train.synthetic_negatives && backbone == Backbone::Birdnet && !train.is_empty() {
            // Training adds synthetic background itself as acoustic features and as
            // spectrograms, not as BirdNET embeddings.
            train.push(
                self.synthetic_background(backbone, &training_window)
                    .await?,
            );
        }

        let mut summary = data_summary(&recordings, &splits, &fingerprint, decoded, &unusable);
        summary["training_windows"] = match &spectrograms {
            Some(s) => json!({
                "spectrograms": s.len(),
                "frames": s.iter().map(|r| r.spectrogram.frames()).sum::<usize>(),
                "decoded": training_decoded,
            }),
            None => json!({
                "hop_s": training_window.hop_s,
                "windows": train.iter().map(|r| r.windows.len()).sum::<usize>(),
                "decoded": training_decoded,
            }),
        };
        sqlx::query("UPDATE retrain_runs SET data_summary = $2 WHERE id = $1")
            .bind(run)
            .bind(&summary)
            .execute(&self.pool)
            .await
            .map_err(query("recording the data summary"))?;
        Ok(Prepared::Sets(DataSets {
            train,
            spectrograms,
            validation,
            holdout,
        }))
    }

    /// Step 6: the artifact (and the judged model beside a refit one) under a
    /// new version, through the registry, as a candidate.
    async fn publish(
        &self,
        run: Uuid,
        artifact: &mut Artifact,
        judged: Option<&Artifact>,
        params: &RunParams,
        new_scores: &Option<Scores>,
        decision: &Decision,
    ) -> Result<String, RetrainError> {
        let version = self.next_version().await?;
        artifact.set_version(version.clone());
        let metrics = json!({
            "gate_metric": params.gate_metric.name(),
            "holdout": new_scores,
            "evaluation": artifact.meta().metrics,
            "refit": artifact.meta().refit,
        });
        registry::artifacts::publish_refit(
            &self.pool,
            &self.objects,
            artifact,
            judged,
            &NewVersion {
                version: version.clone(),
                metrics,
                status_reason: Some(decision.reason.clone()),
                retrain_run_id: Some(run),
            },
        )
        .await?;
        Ok(version)
    }

    /// The run row names the model it produced and the figures that decided.
    async fn record_model(
        &self,
        run: Uuid,
        version: &str,
        run_metrics: &Value,
    ) -> Result<(), RetrainError> {
        sqlx::query(
            "UPDATE retrain_runs SET model_version = $2, metrics = $3, promoted = false WHERE id = $1",
        )
        .bind(run)
        .bind(version)
        .bind(run_metrics)
        .execute(&self.pool)
        .await
        .map_err(query("recording the run's model"))?;
        Ok(())
    }

    /// Step 7: promotion through the registry (which queues the tasks that
    /// waited for a model), then the run row says so.
    async fn promote(
        &self,
        run: Uuid,
        version: &str,
        decision: &Decision,
        publisher: &Publisher,
    ) -> Result<(), RetrainError> {
        let done = registry::promote_and_requeue(
            &self.pool,
            publisher,
            &self.config.queues,
            version,
            &decision.reason,
        )
        .await?;
        sqlx::query("UPDATE retrain_runs SET promoted = true WHERE id = $1")
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(query("recording the promotion"))?;
        tracing::info!(
            %version,
            previous = ?done.promotion.previous,
            requeued = done.requeued,
            reason = %decision.reason,
            "promoted"
        );
        Ok(())
    }

    /// A run that started after this request was made and trained on the
    /// same data with the same parameters makes this one redundant.
    async fn covered_by(
        &self,
        run: Uuid,
        fingerprint: &str,
        req: &RetrainRequest,
        requested_at: DateTime<Utc>,
    ) -> Result<Option<Uuid>, RetrainError> {
        let params = if req.params.is_null() {
            json!({})
        } else {
            req.params.clone()
        };
        sqlx::query_scalar(
            "SELECT id FROM retrain_runs
             WHERE id <> $1 AND status = 'succeeded' AND started_at > $2
               AND data_summary->>'fingerprint' = $3 AND params = $4 AND force_promote = $5
             ORDER BY started_at DESC LIMIT 1",
        )
        .bind(run)
        .bind(requested_at)
        .bind(fingerprint)
        .bind(&params)
        .bind(req.force_promote)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| query("looking for an equivalent run")(e).into())
    }

    /// `recordings` again as `backbone` vectors in `window`: the training set cut
    /// with the recipe's own windows (a shorter hop than the workers' gives the network
    /// every call at several offsets), or the holdout as the promoted model's backbone
    /// hears it. Windows no worker stored are analysed and stored here, once (the
    /// count of those is returned too); `stage` names the step in the run's progress.
    async fn reanalysed(
        &self,
        backbone: Backbone,
        window: &WindowConfig,
        recordings: &[Recording],
        progress: &Progress,
        stage: &'static str,
    ) -> Result<(Vec<Recording>, usize), RetrainError> {
        let labels: Vec<(String, String)> = recordings
            .iter()
            .map(|r| (r.id.clone(), r.label.clone()))
            .collect();
        progress
            .report(json!({"stage": stage, "backbone": backbone.name(), "hop_s": window.hop_s}));
        let p = progress.clone();
        let (loaded, decoded, _) = dataset::load(
            &self.pool,
            &self.objects,
            &self.analyzer,
            backbone,
            window,
            &labels,
            |i, n| {
                p.report(json!({"stage": stage, "done": i, "of": n}));
            },
        )
        .await?;
        Ok((loaded.iter().map(to_recording).collect(), decoded))
    }

    /// Synthetic background (silence, noise, hum) analysed for `backbone`, as one
    /// background recording.
    async fn synthetic_background(
        &self,
        backbone: Backbone,
        window: &WindowConfig,
    ) -> Result<Recording, RetrainError> {
        let analyzer = self.analyzer.clone();
        let window = window.clone();
        let windows = tokio::task::spawn_blocking(move || {
            let mut windows = Vec::new();
            for wav in birdsong_model::negatives::synthetic_clips() {
                let a = analyzer
                    .analyse_reader_in(backbone, &window, std::io::Cursor::new(wav))
                    .map_err(|e| RetrainError::Data(format!("synthetic background: {e}")))?;
                windows.extend(a.vectors);
            }
            Ok::<_, RetrainError>(windows)
        })
        .await
        .map_err(|e| RetrainError::Internal(format!("analysis panicked: {e}")))??;
        Ok(Recording {
            id: "synthetic background".into(),
            label: birdsong_model::BACKGROUND_LABELS[0].into(),
            windows,
        })
    }

    /// Step 5: the judged recipe trained again on every labelled recording,
    /// carrying the judged model's thresholds and figures.
    async fn refit(
        &self,
        params: &RunParams,
        train: TrainingSet,
        validation: Vec<Recording>,
        holdout: Vec<Recording>,
        judged: &Artifact,
        progress: &Progress,
    ) -> Result<Artifact, RetrainError> {
        let held: Vec<Recording> = validation.into_iter().chain(holdout).collect();
        let all = match train {
            TrainingSet::Spectrograms(s) => {
                progress.report(json!({"stage": "loading spectrograms to refit on",
                                       "recordings": held.len()}));
                let p = progress.clone();
                let more = dataset::spectrograms(&self.objects, &held, |i, n| {
                    p.report(json!({"stage": "loading spectrograms to refit on",
                                    "done": i, "of": n}));
                })
                .await?;
                let mut all = Arc::unwrap_or_clone(s);
                all.extend(more);
                TrainingSet::Spectrograms(Arc::new(all))
            }
            TrainingSet::Windows(w) => {
                // Held-out recordings were cut with the workers' windows; the
                // refit trains on the recipe's own, as the judged model did.
                let backbone = params.train.features.backbone();
                let window = self.analyzer.windowing(backbone);
                let training_window = params.train.training_windows(&window);
                let held = if training_window == window {
                    held
                } else {
                    self.reanalysed(
                        backbone,
                        &training_window,
                        &held,
                        progress,
                        "loading windows to refit on",
                    )
                    .await?
                    .0
                };
                let mut all = Arc::unwrap_or_clone(w);
                all.extend(held);
                TrainingSet::Windows(Arc::new(all))
            }
        };
        let mut refit_params = params.clone();
        refit_params.train = birdsong_model::refit_config(&params.train, &judged.meta().history);
        let refit = self
            .train(refit_params, all, Vec::new(), progress, "refitting")
            .await?;
        let mut artifact = refit.artifact;
        birdsong_model::carry_over(judged, &mut artifact)?;
        Ok(artifact)
    }

    /// Trains on a blocking thread, reporting each epoch under `stage`.
    async fn train(
        &self,
        params: RunParams,
        train_set: TrainingSet,
        validation: Vec<Recording>,
        progress: &Progress,
        stage: &'static str,
    ) -> Result<TrainedModel, RetrainError> {
        let p = progress.clone();
        p.report(
            json!({"stage": stage, "epoch": 0, "epochs": params.train.epochs,
                        "network": 1, "networks": params.train.members}),
        );
        let analyzer = self.analyzer.clone();
        tokio::task::spawn_blocking(move || {
            let validation = (!validation.is_empty()).then_some(validation.as_slice());
            let report = |e: &birdsong_model::EpochReport| {
                p.report(json!({
                    "stage": stage,
                    "epoch": e.epoch,
                    "epochs": e.epochs,
                    "network": e.member,
                    "networks": e.members,
                    "loss": e.loss,
                    "validation_loss": e.validation_loss,
                    "validation_accuracy": e.validation_accuracy,
                }));
            };
            let train_set = match train_set {
                TrainingSet::Spectrograms(s) => {
                    return birdsong_model::train_cnn(&s, validation, &params.train, report)
                        .map_err(RetrainError::from);
                }
                TrainingSet::Windows(w) => w,
            };
            let train_set = train_set.as_slice();
            if params.train.architecture != birdsong_model::ANCHORED {
                return birdsong_model::train(train_set, validation, &params.train, report)
                    .map_err(RetrainError::from);
            }
            let anchor = analyzer
                .birdnet_anchor(&class_list(train_set), &params.birdnet_names)
                .map_err(|e| RetrainError::Data(format!("the anchored architecture: {e}")))?;
            tracing::info!(
                anchored = anchor.columns.len(),
                "training a head anchored on BirdNET's species layer"
            );
            birdsong_model::train_anchored(train_set, validation, &params.train, &anchor, report)
                .map_err(RetrainError::from)
        })
        .await
        .map_err(|e| RetrainError::Internal(format!("training panicked: {e}")))?
    }

    /// The promoted model, loaded from the object store if possible.
    async fn current_model(&self) -> Result<Option<CurrentModel>, RetrainError> {
        let Some(stored) = registry::artifacts::promoted(&self.pool).await? else {
            return Ok(None);
        };
        let version = stored.version.clone();
        let load = async {
            registry::artifacts::load(&self.objects, &stored)
                .await
                .map_err(|e| e.to_string())
        };
        let load = async {
            let served = load.await?;
            // A refit model heard the holdout: the gate scores its judged model.
            match registry::artifacts::load_judged(&self.objects, &stored, &served).await {
                Ok(Some(judged)) => Ok((judged, true)),
                Ok(None) => Ok((served, false)),
                Err(e) => Err(e.to_string()),
            }
        };
        Ok(Some(match load.await {
            Ok((artifact, judged)) => CurrentModel {
                version,
                artifact: Some(artifact),
                judged,
                load_error: None,
            },
            Err(e) => {
                tracing::warn!(%version, error = %e, "cannot load the promoted model to compare with");
                CurrentModel {
                    version,
                    artifact: None,
                    judged: false,
                    load_error: Some(e),
                }
            }
        }))
    }

    /// `v<N>`, one more than the largest such version. Only the lock holder
    /// creates versions, so this cannot race with another run; the primary
    /// key refuses a duplicate made by hand.
    async fn next_version(&self) -> Result<String, RetrainError> {
        let last: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(substring(version FROM 2)::bigint), 0) FROM model_versions
             WHERE version ~ '^v[0-9]{1,18}$'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(query("choosing a version name"))?;
        Ok(format!("v{}", last + 1))
    }
}

#[derive(Clone)]
struct CurrentModel {
    version: String,
    /// What the gate scores: the judged model of a refit version, else the
    /// served one.
    artifact: Option<Artifact>,
    /// Whether `artifact` is a judged model.
    judged: bool,
    load_error: Option<String>,
}

/// The labelled recordings, split.
struct DataSets {
    /// As windows of the run's backbone (for the spectrogram CNN, only to check and
    /// count them).
    train: Vec<Recording>,
    /// For the spectrogram CNN, what it trains on: the training recordings' band
    /// power.
    spectrograms: Option<Vec<SpectrogramRecording>>,
    validation: Vec<Recording>,
    holdout: Vec<Recording>,
}

/// What a network trains on; shared, since a refit trains on it again.
#[derive(Clone)]
enum TrainingSet {
    /// Cut windows (every architecture but the CNN).
    Windows(Arc<Vec<Recording>>),
    /// Whole recordings' spectrograms (the CNN).
    Spectrograms(Arc<Vec<SpectrogramRecording>>),
}

/// What [`Retrainer::prepare_data`] found.
enum Prepared {
    /// Another run already covers this one, for this reason.
    Skip(String),
    Sets(DataSets),
}

/// Refuses data that cannot make a model, before any training: fewer than
/// two species, no windows, or early stopping without validation recordings.
fn check_trainable(sets: &DataSets, params: &RunParams) -> Result<(), RetrainError> {
    let classes = class_list(&sets.train);
    if classes.len() < 2 {
        let usable = sets.train.len() + sets.validation.len() + sets.holdout.len();
        return Err(RetrainError::Data(format!(
            "a model needs labelled recordings of at least 2 species; there are {} \
             ({usable} usable labelled recordings)",
            classes.len(),
        )));
    }
    if sets.train.iter().all(|r| r.windows.is_empty())
        || sets.spectrograms.as_ref().is_some_and(Vec::is_empty)
    {
        return Err(RetrainError::Data("no training windows".into()));
    }
    if matches!(params.train.stopping, Stopping::EarlyStopping { .. }) && sets.validation.is_empty()
    {
        return Err(RetrainError::Params(
            "patience (early stopping) needs validation recordings, and there are none".into(),
        ));
    }
    Ok(())
}

fn to_recording(r: &Labelled) -> Recording {
    Recording {
        id: r.sha256.clone(),
        label: r.label.clone(),
        windows: r.windows.clone(),
    }
}

type Evaluated = (Artifact, Option<Scores>, Option<Scores>);

/// Scores both models on the holdout and stores the new model's full
/// evaluation in its artifact.
fn evaluate(
    trained: TrainedModel,
    current: Option<CurrentModel>,
    holdout: &[Recording],
    current_holdout: &[Recording],
    validation: &[Recording],
) -> Result<Evaluated, RetrainError> {
    let TrainedModel {
        mut artifact,
        mut classifier,
    } = trained;
    // Detection thresholds come from recordings the model was not trained on: the
    // holdout, plus the validation recordings when there are any. They decide which
    // scores are detections, never which species wins, so the gate's figures on the
    // same holdout are unaffected.
    let calibration: Vec<Recording> = holdout.iter().chain(validation).cloned().collect();
    if !calibration.is_empty() {
        let thresholds = birdsong_model::calibrate(
            &classifier,
            &calibration,
            birdsong_model::DEFAULT_TARGET_PRECISION,
            Some(birdsong_model::evaluate::EVALUATION_QUIET_MARGIN_DB),
        )?;
        classifier = classifier.with_thresholds(thresholds.values.clone())?;
        artifact.set_thresholds(thresholds);
    }
    let new_scores = gate::score(&classifier, holdout)?;
    if !holdout.is_empty() {
        artifact.set_metrics("holdout", birdsong_model::evaluate(&classifier, holdout)?);
    }
    if !validation.is_empty() {
        artifact.set_metrics(
            "validation",
            birdsong_model::evaluate(&classifier, validation)?,
        );
    }
    let current_scores = match current.and_then(|c| c.artifact) {
        Some(a) => {
            let old = Classifier::from_artifact(&a)?;
            gate::score(&old, current_holdout)?
        }
        None => None,
    };
    Ok((artifact, new_scores, current_scores))
}

/// Recordings and windows per split and per species, for the run row.
fn data_summary(
    recordings: &[Labelled],
    splits: &[Split],
    fingerprint: &str,
    decoded: usize,
    unusable: &[dataset::Unusable],
) -> Value {
    #[derive(Default, Clone, Copy)]
    struct Count {
        recordings: usize,
        windows: usize,
    }
    let mut per_split: BTreeMap<&str, Count> = BTreeMap::new();
    let mut per_class: BTreeMap<&str, BTreeMap<&str, Count>> = BTreeMap::new();
    for (r, s) in recordings.iter().zip(splits) {
        for c in [
            per_split.entry(s.name()).or_default(),
            per_class
                .entry(r.label.as_str())
                .or_default()
                .entry(s.name())
                .or_default(),
        ] {
            c.recordings += 1;
            c.windows += r.windows.len();
        }
    }
    let count = |c: &Count| json!({"recordings": c.recordings, "windows": c.windows});
    json!({
        "fingerprint": fingerprint,
        "recordings": recordings.len(),
        "windows": recordings.iter().map(|r| r.windows.len()).sum::<usize>(),
        "decoded": decoded,
        "unusable": unusable,
        "splits": per_split.iter().map(|(k, v)| (k.to_string(), count(v))).collect::<serde_json::Map<_, _>>(),
        "classes": per_class.iter().map(|(class, splits)| {
            (class.to_string(), Value::Object(splits.iter().map(|(k, v)| (k.to_string(), count(v))).collect()))
        }).collect::<serde_json::Map<_, _>>(),
    })
}
